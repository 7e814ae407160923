# _cuda_emu: the CUDA kernels compiled with the host compiler against the CPU
# emulator in csrc/emu (DLKERN_EMU defined), for tests on machines without a
# GPU. Needs no CUDA toolkit. Included from CMakeLists.txt when DLKERN_EMU=ON,
# after pybind11 has been found.

find_package(Threads REQUIRED)

file(GLOB DLKERN_EMU_RUNTIME_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/*.cpp)

# The emulator runtime: fibers, scheduler, warp collectives, runtime API.
add_library(dlkern_emu STATIC ${DLKERN_EMU_RUNTIME_SOURCES})
target_include_directories(dlkern_emu PUBLIC
  ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
target_compile_definitions(dlkern_emu PUBLIC DLKERN_EMU)
target_compile_options(dlkern_emu PRIVATE ${DLKERN_WARNINGS})
target_link_libraries(dlkern_emu PUBLIC Threads::Threads)

# Kernel code carries `#pragma unroll`, which only nvcc knows.
set(DLKERN_EMU_KERNEL_OPTIONS ${DLKERN_WARNINGS} -Wno-unknown-pragmas)

# Every .cu under csrc/cuda (family folders included), compiled as C++
# through a generated one-line wrapper, so that a new kernel family is picked
# up without touching this file. A wrapper is named by the path of its .cu
# below csrc/cuda (cuda/conv/simt.cu -> emu/conv/simt.cpp), so that files of
# the same name in two folders stay apart.
file(GLOB_RECURSE DLKERN_EMU_CU_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/csrc/cuda/*.cu)
set(DLKERN_EMU_KERNEL_SOURCES)
foreach(cu ${DLKERN_EMU_CU_SOURCES})
  file(RELATIVE_PATH rel ${CMAKE_CURRENT_SOURCE_DIR}/csrc/cuda ${cu})
  string(REGEX REPLACE "\\.cu$" ".cpp" wrapper_rel ${rel})
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/emu/${wrapper_rel})
  file(CONFIGURE OUTPUT ${wrapper} CONTENT "#include \"cuda/${rel}\"\n")
  list(APPEND DLKERN_EMU_KERNEL_SOURCES ${wrapper})
endforeach()

pybind11_add_module(_cuda_emu MODULE csrc/bindings/cuda_module.cpp ${DLKERN_EMU_KERNEL_SOURCES})
target_compile_definitions(_cuda_emu PRIVATE DLKERN_MODULE_NAME=_cuda_emu)
target_link_libraries(_cuda_emu PRIVATE dlkern_emu dlkern_common)
target_compile_options(_cuda_emu PRIVATE ${DLKERN_EMU_KERNEL_OPTIONS})

# ---------------------------------------------------------- test fixtures --
# Deliberately broken kernels (a missing barrier, deadlocks, an early read of
# a cp.async destination, ...) that tests/test_emu.py expects the emulator to
# catch. Never part of a wheel.
pybind11_add_module(_emu_fixtures MODULE tests/emu/fixtures_module.cpp)
target_link_libraries(_emu_fixtures PRIVATE dlkern_emu)
target_compile_options(_emu_fixtures PRIVATE ${DLKERN_EMU_KERNEL_OPTIONS})
list(APPEND DLKERN_MODULES _emu_fixtures)

# The same runtime and fixtures under AddressSanitizer (out-of-bounds heap,
# global and dynamic shared memory) and -fsanitize=bounds (indices out of the
# bounds of arrays, which also covers static __shared__ arrays: they are
# thread-local variables, which AddressSanitizer does not instrument). An
# executable, since an instrumented Python module would need the sanitizer
# runtime preloaded into the interpreter.
include(CheckCXXSourceCompiles)
set(DLKERN_SANITIZE -fsanitize=address,bounds -fno-sanitize-recover=all)
set(CMAKE_REQUIRED_FLAGS "${DLKERN_SANITIZE}")
set(CMAKE_REQUIRED_LINK_OPTIONS ${DLKERN_SANITIZE})
string(REPLACE ";" " " CMAKE_REQUIRED_FLAGS "${CMAKE_REQUIRED_FLAGS}")
check_cxx_source_compiles("int main() { return 0; }" DLKERN_HAVE_SANITIZERS)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LINK_OPTIONS)
if(DLKERN_HAVE_SANITIZERS)
  add_executable(emu_sanitizer_check tests/emu/sanitizer_check.cpp ${DLKERN_EMU_RUNTIME_SOURCES})
  target_include_directories(emu_sanitizer_check PRIVATE
    ${CMAKE_CURRENT_SOURCE_DIR}/csrc/include ${CMAKE_CURRENT_SOURCE_DIR}/csrc)
  target_compile_definitions(emu_sanitizer_check PRIVATE DLKERN_EMU)
  target_compile_options(emu_sanitizer_check PRIVATE
    ${DLKERN_EMU_KERNEL_OPTIONS} ${DLKERN_SANITIZE} -fno-omit-frame-pointer -g -O1)
  target_link_options(emu_sanitizer_check PRIVATE ${DLKERN_SANITIZE})
  target_link_libraries(emu_sanitizer_check PRIVATE Threads::Threads)
  add_dependencies(_emu_fixtures emu_sanitizer_check)
  # It lives beside the modules (installed with them), so an installed
  # package finds it after the build tree is gone.
  install(TARGETS emu_sanitizer_check RUNTIME DESTINATION dlkern)
  if(DLKERN_DEV_INPLACE)
    set_target_properties(emu_sanitizer_check PROPERTIES
      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/python/dlkern)
  endif()
  target_compile_definitions(_emu_fixtures PRIVATE
    "DLKERN_EMU_SANITIZER_CHECK=\"$<TARGET_FILE_NAME:emu_sanitizer_check>\"")
else()
  message(STATUS "dlkern: the compiler cannot build with ${DLKERN_SANITIZE}; "
                 "the emulator's sanitizer test will be skipped")
  target_compile_definitions(_emu_fixtures PRIVATE "DLKERN_EMU_SANITIZER_CHECK=\"\"")
endif()
