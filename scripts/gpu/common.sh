# Shared by scripts/gpu/pack.sh and session.sh (sourced).
# kernels_hash REPO: one hash of every source under REPO/kernels that the test and bench programs are
# built from, read from the files themselves (the GPU machine's copy of the tree may have no .git).
kernels_hash() {
  (cd "$1" && find kernels -type f \( -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.hpp' \
     -o -name 'CMakeLists.txt' \) -not -path '*/emu/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum |
     sha256sum | cut -c1-16)
}
