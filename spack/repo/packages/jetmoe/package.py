# Spack recipe for JetMoE, a Kokkos-portable implementation of the JetMoE mixture-of-experts LLM.
#
# Package API v1 (see ../../repo.yaml): `from spack.package import *` provides CMakePackage and
# CudaPackage on Spack 0.21-0.23 directly, and on Spack >= 1.0 through the v1 compatibility layer
# of the builtin repository (spack-packages).
#
# How the variants reach the build (the project's own CMake options, see CMakeLists.txt):
#   +mpi / ~mpi        -> JETMOE_ENABLE_MPI
#   +hdf5 / ~hdf5      -> JETMOE_ENABLE_HDF5 (parallel HDF5 when +mpi)
#   +cuda / ~cuda      -> JETMOE_ENABLE_CUDA=ON/OFF (never AUTO: a Spack build must not pick up a
#                         system nvcc that is not in the DAG), CMAKE_CUDA_ARCHITECTURES,
#                         CMAKE_CXX_COMPILER=Kokkos' nvcc_wrapper
#   +nccl              -> JETMOE_ENABLE_NCCL (NCCL_HOME points at Spack's nccl)
#   +tests / --test    -> JETMOE_ENABLE_TESTS;  +gpu_tests -> JETMOE_ENABLE_GPU_TESTS
#   +openmp            -> Kokkos' OpenMP host backend (no jetmoe CMake option: Kokkos carries it)

import os
import re
from itertools import combinations

from spack.package import *

#: Base CUDA architectures jetmoe builds for: each must be one Kokkos >= 4.7.01 knows (its
#: spack_cuda_arch_map) and CUDA 13 still compiles for (sm_75 and newer). Only 90 (H100/H200) is
#: exercised; the tuned kernels in kernels/ are written for sm_90a.
JETMOE_CUDA_ARCHES = ("75", "80", "86", "87", "89", "90", "100", "120")

#: Applications installed to bin/ (checked by the sanity check and the stand-alone tests).
JETMOE_APPS = ("jetmoe-train", "jetmoe-generate", "jetmoe-eval", "jetmoe-prepare", "jetmoe-convert")

#: Input decks installed to share/jetmoe/inputs/.
JETMOE_DECKS = (
    "tiny.deck",
    "prepare-tiny.deck",
    "jetmoe-8b.deck",
    "jetmoe-8b-sft.deck",
    "jetmoe-8b-dpo.deck",
    "jetmoe-8b-generate.deck",
)


def _base_cuda_arch(arch):
    """'90a' -> '90', '100f' -> '100', '80' -> '80' (Kokkos knows only the plain numbers)."""
    return re.match(r"\d+", arch).group(0)


def _cmake_cuda_arch(arch):
    """CMAKE_CUDA_ARCHITECTURES entry for one Spack cuda_arch value.

    cuda_arch=90 becomes "90a": the Hopper kernels use wgmma/TMA, which exist only in
    arch-specific sm_90a code (-gencode=arch=compute_90a,code=sm_90a). Spack's "90" is what
    Kokkos understands (Kokkos_ARCH_HOPPER90), so users write cuda_arch=90 and get 90a here.
    Every other value is passed through unchanged.
    """
    return "90a" if arch == "90" else arch


def _cuda_device_visible():
    """True when this host has an NVIDIA device node (tests of a +cuda build need one)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")


class Jetmoe(CMakePackage, CudaPackage):
    """JetMoE: pretraining, SFT/DPO, evaluation and generation for the JetMoE
    mixture-of-experts language model, written on Kokkos + MPI + parallel HDF5
    with hand-tuned CUDA kernels for NVIDIA Hopper (H100/H200)."""

    # Placeholders: a site points these at its mirror of the JetMoE repository.
    homepage = "https://example.org/jetmoe"
    git = "https://example.org/REPLACE-WITH-YOUR-MIRROR/jetmoe.git"

    # Add tagged releases here (version("0.1.0", tag="v0.1.0", commit="<sha>")) once they exist.
    version("main", branch="main")

    # ---- variants (cuda and cuda_arch come from CudaPackage) ---------------------------------
    variant("mpi", default=True, description="MPI pipeline and data parallelism")
    variant("hdf5", default=True, description="HDF5 checkpoints (parallel HDF5 when +mpi)")
    variant("openmp", default=True, description="Kokkos OpenMP host backend (threaded CPU runs)")
    variant("nccl", default=False, description="NCCL for GPU collectives (needs +cuda)")
    variant("tests", default=False, description="Build the Catch2 unit tests (ctest -L unit)")
    variant(
        "gpu_tests",
        default=False,
        when="+cuda",
        description="Also register the tests that need a CUDA device (ctest -L gpu)",
    )

    # ---- build tools ------------------------------------------------------------------------
    depends_on("c", type="build")  # FindMPI and FindHDF5 need the C compiler
    depends_on("cxx", type="build")
    depends_on("cmake@3.21:", type="build")
    depends_on("pkgconfig", type="build")  # SentencePiece is found through pkg-config first
    depends_on("zlib-api")  # jetmoe-prepare reads .gz corpora

    # ---- Kokkos and Kokkos Kernels -------------------------------------------------------------
    # 4.7.01 is the first Kokkos whose CUDA backend supports CUDA 13. Kokkos Kernels pins the
    # Kokkos of its own version (kokkos-kernels@X depends on kokkos@X), so the two always match.
    depends_on("kokkos@4.7.01:")
    # The BLAS TPL sends KokkosBlas::gemm on contiguous host views to the vendor BLAS.
    depends_on("kokkos-kernels@4.7.01: +blas")
    depends_on("kokkos+openmp", when="+openmp")
    # A CUDA Kokkos without jetmoe's kernels/ is rejected by jetmoe's CMake: keep them together.
    depends_on("kokkos~cuda", when="~cuda")

    with when("+cuda"):
        depends_on("cuda@12:")
        # nvcc_wrapper is jetmoe's C++ compiler in CUDA builds (see cmake_args).
        depends_on("kokkos+cuda+wrapper")
        # Device lambdas (KOKKOS_LAMBDA); the variant exists only for Kokkos 4.x (always on in 5).
        depends_on("kokkos+cuda_lambda", when="^kokkos@:4")
        # cudaMallocAsync memory breaks CUDA IPC used by GPU-aware MPI; Spack's default is off
        # already, this keeps a site-wide preference from turning it on under jetmoe.
        depends_on("kokkos~alloc_async", when="+mpi")
        # KokkosBlas::gemm on CUDA views goes to cuBLAS instead of the native kernel.
        depends_on("kokkos-kernels+cuda+cublas")

    # cuda_arch propagation. Kokkos accepts exactly one, plain-numbered architecture, so
    # cuda_arch=90 and cuda_arch=90a both give kokkos/kokkos-kernels/nccl cuda_arch=90.
    for _arch in CudaPackage.cuda_arch_values:
        _base = _base_cuda_arch(_arch)
        if _base in JETMOE_CUDA_ARCHES:
            depends_on(f"kokkos cuda_arch={_base}", when=f"+cuda cuda_arch={_arch}")
            depends_on(f"kokkos-kernels cuda_arch={_base}", when=f"+cuda cuda_arch={_arch}")
            depends_on(f"nccl cuda_arch={_base}", when=f"+nccl cuda_arch={_arch}")
        else:
            conflicts(
                f"cuda_arch={_arch}",
                when="+cuda",
                msg=f"cuda_arch={_arch} is not supported: jetmoe builds for one of "
                + ", ".join(JETMOE_CUDA_ARCHES)
                + " (Kokkos >= 4.7.01 and CUDA 13); use cuda_arch=90 for H100/H200",
            )
    for _a, _b in combinations(JETMOE_CUDA_ARCHES, 2):
        conflicts(
            f"cuda_arch={_a},{_b}",
            when="+cuda",
            msg="Kokkos is built for exactly one CUDA architecture: give jetmoe one cuda_arch",
        )
    conflicts(
        "cuda_arch=none",
        when="+cuda",
        msg="+cuda needs a GPU architecture, e.g. cuda_arch=90 for H100/H200",
    )

    # ---- communication and I/O -----------------------------------------------------------------
    depends_on("mpi", when="+mpi")
    # HDF5 1.10 .. 1.14 (Spack prefers 1.14). 2.x is left out until jetmoe has been built and
    # tested against it.
    depends_on("hdf5@1.10:1 +mpi", when="+hdf5+mpi")
    depends_on("hdf5@1.10:1 ~mpi", when="+hdf5~mpi")
    depends_on("nccl", when="+nccl")
    conflicts("+nccl", when="~cuda", msg="NCCL is for GPU collectives: build jetmoe with +cuda")
    conflicts("+nccl", when="~mpi", msg="NCCL communicators are bootstrapped over MPI: build jetmoe with +mpi")

    # ---- model I/O and math --------------------------------------------------------------------
    depends_on("sentencepiece")
    depends_on("nlohmann-json@3:")
    depends_on("blas")  # OpenBLAS in the shipped environments

    # ---- tests ---------------------------------------------------------------------------------
    # Catch2 v2 (single header catch2/catch.hpp). A build dependency when +tests asks for the test
    # suite in every build, a test dependency for `spack install --test=root`.
    depends_on("catch2@2", type="build", when="+tests")
    depends_on("catch2@2", type="test")
    conflicts("+gpu_tests", when="~tests", msg="+gpu_tests extends the test suite: add +tests")

    sanity_check_is_file = [join_path("bin", app) for app in JETMOE_APPS] + [
        join_path("share", "jetmoe", "inputs", deck) for deck in JETMOE_DECKS
    ]

    # ---- build ---------------------------------------------------------------------------------
    def _cuda_arches(self):
        """cuda_arch values of this spec, validated: exactly one base architecture."""
        arches = [a for a in self.spec.variants["cuda_arch"].value if a != "none"]
        bases = sorted({_base_cuda_arch(a) for a in arches})
        if len(bases) != 1:
            raise InstallError(
                f"jetmoe+cuda needs exactly one CUDA architecture (Kokkos supports one); "
                f"got cuda_arch={','.join(arches) or 'none'}. Use cuda_arch=90 for H100/H200."
            )
        return arches

    def _kokkos_cxx(self):
        """Kokkos' nvcc_wrapper: the C++ compiler of every translation unit that sees Kokkos::Cuda."""
        # Kokkos' recipe exposes the compiler as the `kokkos_cxx` property; how it resolves the
        # wrapper has changed across Spack releases, so fall back to the wrapper's install path.
        try:
            return self.spec["kokkos"].package.kokkos_cxx
        except Exception:
            return join_path(self.spec["kokkos-nvcc-wrapper"].prefix.bin, "nvcc_wrapper")

    def cmake_args(self):
        spec = self.spec
        args = [
            self.define_from_variant("JETMOE_ENABLE_MPI", "mpi"),
            self.define_from_variant("JETMOE_ENABLE_HDF5", "hdf5"),
            self.define_from_variant("JETMOE_ENABLE_NCCL", "nccl"),
            self.define("JETMOE_ENABLE_TESTS", spec.satisfies("+tests") or self.run_tests),
            self.define("JETMOE_ENABLE_GPU_TESTS", spec.satisfies("+gpu_tests")),
            # A string option (ON/OFF/AUTO); AUTO is never used here, see the header comment.
            self.define("JETMOE_ENABLE_CUDA", "ON" if spec.satisfies("+cuda") else "OFF"),
            self.define("Kokkos_ROOT", spec["kokkos"].prefix),
            self.define("KokkosKernels_ROOT", spec["kokkos-kernels"].prefix),
            # Same C++ standard as Kokkos (17 for 4.x, 20 for 5.x): Kokkos rejects a lower one.
            self.define("CMAKE_CXX_STANDARD", spec["kokkos"].variants["cxxstd"].value),
        ]

        if spec["blas"].name == "openblas":
            # Without a vendor FindBLAS may stop at a system FlexiBLAS/ATLAS before OpenBLAS.
            args.append(self.define("BLA_VENDOR", "OpenBLAS"))

        if spec.satisfies("+mpi"):
            args.append(self.define("MPI_C_COMPILER", spec["mpi"].mpicc))
            args.append(self.define("MPI_CXX_COMPILER", spec["mpi"].mpicxx))

        if spec.satisfies("+hdf5"):
            args.append(self.define("HDF5_ROOT", spec["hdf5"].prefix))

        if spec.satisfies("+cuda"):
            arches = self._cuda_arches()
            cuda = spec["cuda"]
            args.extend(
                [
                    self.define("CMAKE_CXX_COMPILER", self._kokkos_cxx()),
                    self.define("CMAKE_CUDA_COMPILER", join_path(cuda.prefix.bin, "nvcc")),
                    self.define("CUDAToolkit_ROOT", cuda.prefix),
                    self.define(
                        "CMAKE_CUDA_ARCHITECTURES", sorted({_cmake_cuda_arch(a) for a in arches})
                    ),
                ]
            )
        return args

    def setup_build_environment(self, env):
        # jetmoe's CMake looks for nccl.h / libnccl under $NCCL_HOME.
        if self.spec.satisfies("+nccl"):
            env.set("NCCL_HOME", self.spec["nccl"].prefix)

    # ---- build-time tests: spack install --test=root ------------------------------------------
    def check(self):
        """Run the unit tests (ctest -L unit) in the build directory.

        A +cuda build runs every Kokkos test on the GPU, so on a build host without an NVIDIA
        device the tests are skipped (with a note in the build log) instead of failing: run
        `spack install --test=root` on a GPU node, or ctest in the build directory there.
        """
        if self.spec.satisfies("+cuda") and not _cuda_device_visible():
            print("jetmoe: no CUDA device on this build host; skipping ctest -L unit")
            return
        with working_dir(self.build_directory):
            ctest(
                "--output-on-failure",
                "-L",
                "unit",
                extra_env={
                    # Two threads find races the Serial backend hides; BLAS stays single-threaded.
                    "OMP_NUM_THREADS": "2",
                    "OMP_PROC_BIND": "false",
                    "OPENBLAS_NUM_THREADS": "1",
                },
            )

    # ---- stand-alone tests: spack test run jetmoe ----------------------------------------------
    def test_version(self):
        """every installed application answers --version"""
        for app in JETMOE_APPS:
            with test_part(self, f"test_version_{app}", purpose=f"{app} --version runs"):
                exe = which(join_path(self.prefix.bin, app), required=True)
                out = exe("--version", output=str.split, error=str.split)
                assert "jetmoe" in out.lower(), f"{app} --version printed: {out!r}"

    def test_help(self):
        """every installed application answers --help"""
        for app in JETMOE_APPS:
            with test_part(self, f"test_help_{app}", purpose=f"{app} --help runs"):
                exe = which(join_path(self.prefix.bin, app), required=True)
                exe("--help", output=str.split, error=str.split)

    def test_decks_installed(self):
        """the shipped input decks are installed under share/jetmoe/inputs"""
        for deck in JETMOE_DECKS:
            path = join_path(self.prefix.share.jetmoe.inputs, deck)
            assert os.path.isfile(path), f"missing input deck {path}"
