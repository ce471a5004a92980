# Cross-compiling pyfastopt for aarch64 Linux (used by .ci/aarch64; a native aarch64
# `pip install .` needs none of this: CMAKE_SYSTEM_PROCESSOR is then aarch64 by itself).
#   -DPF_CROSS_COMPILER=gcc (default: aarch64-linux-gnu-g++) or clang (clang++
#    --target=aarch64-linux-gnu, with the GCC cross toolchain's libraries)
#   -DPF_SYSROOT=<arm64 root> with the target's Python headers (its
#    python3 is only run under qemu, through CMAKE_CROSSCOMPILING_EMULATOR)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT DEFINED PF_CROSS_COMPILER)
  set(PF_CROSS_COMPILER gcc)
endif()
if(PF_CROSS_COMPILER STREQUAL "clang")
  set(CMAKE_CXX_COMPILER clang++)
  set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
  set(CMAKE_EXE_LINKER_FLAGS_INIT "-fuse-ld=lld")
  set(CMAKE_SHARED_LINKER_FLAGS_INIT "-fuse-ld=lld")
  set(CMAKE_MODULE_LINKER_FLAGS_INIT "-fuse-ld=lld")
else()
  set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
endif()

# Headers and CMake packages come from the arm64 root; programs from the build machine.
if(DEFINED PF_SYSROOT)
  set(CMAKE_FIND_ROOT_PATH ${PF_SYSROOT})
  # Debian's pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>: the root's
  # /usr/include is searched last (after the cross toolchain's own C library headers).
  set(CMAKE_CXX_FLAGS_INIT "-idirafter ${PF_SYSROOT}/usr/include")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
