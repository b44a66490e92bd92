# Finds every dependency and normalises their targets, so the rest of the build sees one set of names:
#   Kokkos::kokkos  Kokkos::kokkoskernels  MPI::MPI_CXX  hdf5::hdf5  Catch2::Catch2
#   jetmoe::sentencepiece  nlohmann_json::nlohmann_json  BLAS::BLAS  CUDA::cudart  jetmoe::nccl
# and sets JETMOE_HAVE_{MPI,HDF5,CUDA_KERNELS,NCCL} and JETMOE_KOKKOS_DEVICES.
include(GNUInstallDirs)

# ---- Kokkos: Debian's 3.4.01 (TriBITS export) or upstream >= 4.x -------------------------------
# No version in find_package: Debian's KokkosConfigVersion.cmake rejects version requests.
find_package(Kokkos REQUIRED)
if(Kokkos_VERSION VERSION_LESS 3.4)
  message(FATAL_ERROR "jetmoe needs Kokkos 3.4.01 or >= 4.7; found ${Kokkos_VERSION} in ${Kokkos_DIR}")
endif()
if(Kokkos_VERSION VERSION_LESS 4.0)
  # Debian's export points Kokkos::kokkos at /usr/lib/include, which does not exist.
  get_filename_component(_jetmoe_kokkos_inc "${Kokkos_INCLUDE_DIRS}" REALPATH)
  set_property(TARGET Kokkos::kokkos PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_jetmoe_kokkos_inc}")
endif()
# Kokkos 4.x exports Kokkos_DEVICES; 3.4's TriBITS config sets it too.
set(JETMOE_KOKKOS_DEVICES "${Kokkos_DEVICES}")
if(NOT JETMOE_KOKKOS_DEVICES)
  set(JETMOE_KOKKOS_DEVICES "unknown")
endif()
set(JETMOE_KOKKOS_HAS_CUDA OFF)
if("CUDA" IN_LIST Kokkos_DEVICES)
  set(JETMOE_KOKKOS_HAS_CUDA ON)
  if(Kokkos_VERSION VERSION_LESS 4.7.01)
    message(FATAL_ERROR "Kokkos ${Kokkos_VERSION} has the CUDA backend, but jetmoe needs Kokkos >= 4.7.01 "
                        "with CUDA (CUDA 13 support). Found in ${Kokkos_DIR}.")
  endif()
endif()

find_package(KokkosKernels REQUIRED)
if(NOT KokkosKernels_VERSION AND Kokkos_VERSION VERSION_LESS 4.0)
  # Trilinos' export carries no version; Kokkos Kernels 3.x shares Kokkos' version.
  set(KokkosKernels_VERSION "${Kokkos_VERSION}")
endif()
if(NOT TARGET Kokkos::kokkoskernels)
  # Trilinos-style export (Debian): only the plain library target exists.
  add_library(Kokkos::kokkoskernels INTERFACE IMPORTED)
  target_link_libraries(Kokkos::kokkoskernels INTERFACE trilinos_kokkoskernels Kokkos::kokkos
                        ${KokkosKernels_TPL_LIBRARIES})
endif()

# ---- BLAS (OpenBLAS on Debian); Kokkos Kernels' gemm calls it for contiguous float views ---------
find_package(BLAS REQUIRED)

# ---- MPI ----------------------------------------------------------------------------------------
set(JETMOE_HAVE_MPI OFF)
if(JETMOE_ENABLE_MPI)
  find_package(MPI REQUIRED COMPONENTS C CXX)
  set(JETMOE_HAVE_MPI ON)
endif()

# ---- HDF5 (parallel when MPI is on) ---------------------------------------------------------------
set(JETMOE_HAVE_HDF5 OFF)
if(JETMOE_ENABLE_HDF5)
  if(JETMOE_HAVE_MPI)
    set(HDF5_PREFER_PARALLEL ON)
  endif()
  find_package(HDF5 REQUIRED COMPONENTS C)
  if(JETMOE_HAVE_MPI AND NOT HDF5_IS_PARALLEL)
    message(FATAL_ERROR "JETMOE_ENABLE_MPI=ON needs a parallel (MPI-IO) HDF5, but ${HDF5_C_INCLUDE_DIRS} "
                        "is serial. Install libhdf5-openmpi-dev (Debian) or hdf5+mpi (Spack), "
                        "or configure with -DJETMOE_ENABLE_HDF5=OFF.")
  endif()
  if(NOT TARGET hdf5::hdf5)
    add_library(hdf5::hdf5 INTERFACE IMPORTED)
    target_include_directories(hdf5::hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
    target_link_libraries(hdf5::hdf5 INTERFACE ${HDF5_C_LIBRARIES} ${HDF5_LIBRARIES})
    target_compile_definitions(hdf5::hdf5 INTERFACE ${HDF5_C_DEFINITIONS} ${HDF5_DEFINITIONS})
  endif()
  set(JETMOE_HAVE_HDF5 ON)
endif()

# ---- SentencePiece (pkg-config on Debian and Spack) ----------------------------------------------
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
endif()
if(TARGET PkgConfig::SENTENCEPIECE)
  add_library(jetmoe::sentencepiece ALIAS PkgConfig::SENTENCEPIECE)
else()
  find_path(SENTENCEPIECE_INCLUDE_DIR sentencepiece_processor.h)
  find_library(SENTENCEPIECE_LIBRARY sentencepiece)
  if(NOT SENTENCEPIECE_INCLUDE_DIR OR NOT SENTENCEPIECE_LIBRARY)
    message(FATAL_ERROR "SentencePiece not found: install libsentencepiece-dev (Debian) or "
                        "sentencepiece (Spack), or set CMAKE_PREFIX_PATH.")
  endif()
  add_library(jetmoe::sentencepiece INTERFACE IMPORTED)
  target_include_directories(jetmoe::sentencepiece INTERFACE ${SENTENCEPIECE_INCLUDE_DIR})
  target_link_libraries(jetmoe::sentencepiece INTERFACE ${SENTENCEPIECE_LIBRARY})
endif()

# ---- zlib (gzip-compressed corpora in jetmoe-prepare) and threads (its tokenising workers) ---------
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)

# ---- nlohmann-json (safetensors headers, HF config.json) -----------------------------------------
find_package(nlohmann_json 3 REQUIRED)

# ---- Catch2 v2 (tests only) ----------------------------------------------------------------------
if(JETMOE_ENABLE_TESTS)
  find_package(Catch2 2 REQUIRED)
endif()

# ---- CUDA toolkit: kernels/ is compiled whenever nvcc is there, whatever Kokkos' backend ----------
set(JETMOE_HAVE_CUDA_KERNELS OFF)
if(NOT JETMOE_ENABLE_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
  include(CheckLanguage)
  check_language(CUDA)
  if(CUDAToolkit_FOUND AND CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # sm_90a: Hopper with wgmma/TMA; the only target the tuned kernels are written for.
      set(CMAKE_CUDA_ARCHITECTURES 90a CACHE STRING "CUDA architectures for kernels/")
    endif()
    # One CUDA runtime per process: the shared libcudart (CMake's default would add cudart_static
    # to every executable next to the libcudart.so that CUDA::cudart brings).
    set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(JETMOE_HAVE_CUDA_KERNELS ON)
  elseif(JETMOE_ENABLE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "JETMOE_ENABLE_CUDA=ON but no CUDA toolkit/nvcc was found "
                        "(set CUDAToolkit_ROOT or put nvcc on PATH).")
  endif()
endif()
if(JETMOE_KOKKOS_HAS_CUDA AND NOT JETMOE_HAVE_CUDA_KERNELS)
  message(FATAL_ERROR "Kokkos has the CUDA backend but kernels/ is not built: enable JETMOE_ENABLE_CUDA.")
endif()

# ---- NCCL: GPU-to-GPU traffic of the bf16 path (its communicators are bootstrapped over MPI) -------
set(JETMOE_HAVE_NCCL OFF)
if(NOT JETMOE_ENABLE_NCCL STREQUAL "OFF")
  set(_nccl_why "")
  if(NOT JETMOE_HAVE_CUDA_KERNELS)
    set(_nccl_why "needs the CUDA toolkit (JETMOE_ENABLE_CUDA)")
  elseif(NOT JETMOE_HAVE_MPI)
    set(_nccl_why "needs MPI (JETMOE_ENABLE_MPI), which bootstraps its communicators")
  else()
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ENV NCCL_HOME ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
    find_library(NCCL_LIBRARY nccl HINTS ENV NCCL_HOME ${CUDAToolkit_LIBRARY_DIR}
                 "${CUDAToolkit_LIBRARY_ROOT}/lib" PATH_SUFFIXES lib lib64)
    if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
      set(_nccl_why "was not found (set NCCL_HOME)")
    endif()
  endif()
  if(_nccl_why STREQUAL "")
    add_library(jetmoe::nccl INTERFACE IMPORTED)
    target_include_directories(jetmoe::nccl INTERFACE ${NCCL_INCLUDE_DIR})
    target_link_libraries(jetmoe::nccl INTERFACE ${NCCL_LIBRARY})
    set(JETMOE_HAVE_NCCL ON)
  elseif(JETMOE_ENABLE_NCCL STREQUAL "ON")
    message(FATAL_ERROR "JETMOE_ENABLE_NCCL=ON but NCCL ${_nccl_why}.")
  endif()
endif()
