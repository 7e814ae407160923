# The test-only modules (DLKERN_TESTS): entry points that only tests/ calls,
# kept out of the production modules. Each mirrors the module it tests:
#   _cpu_testing        tests/bindings/cpu_testing.cpp on the CPU library
#   _cuda_testing       tests/bindings/cuda_testing.cpp and the self-test kernels
#                       (tests/cuda/selftest.cu) on the CUDA library
#   _cuda_emu_testing   the same source, with the self-test kernels, on the emulator
# Included from CMakeLists.txt after the production modules and cmake/emu.cmake.

pybind11_add_module(_cpu_testing MODULE tests/bindings/cpu_testing.cpp)
target_link_libraries(_cpu_testing PRIVATE dlkern_cpu)
target_compile_options(_cpu_testing PRIVATE ${DLKERN_WARNINGS})
list(APPEND DLKERN_MODULES _cpu_testing)

if(DLKERN_HAVE_CUDA)
  pybind11_add_module(_cuda_testing MODULE tests/bindings/cuda_testing.cpp
                      tests/cuda/selftest.cu)
  target_compile_definitions(_cuda_testing PRIVATE DLKERN_MODULE_NAME=_cuda_testing)
  target_link_libraries(_cuda_testing PRIVATE dlkern_cuda CUDA::cudart_static)
  target_compile_options(_cuda_testing PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${DLKERN_WARNINGS}>
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-Wall,-Wextra>)
  list(APPEND DLKERN_MODULES _cuda_testing)
endif()

if(DLKERN_EMU)
  # The self-test kernels compiled as C++, through a wrapper as cmake/emu.cmake
  # does for csrc/cuda.
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/emu/tests/selftest.cpp)
  file(CONFIGURE OUTPUT ${wrapper}
       CONTENT "#include \"${CMAKE_CURRENT_SOURCE_DIR}/tests/cuda/selftest.cu\"\n")
  pybind11_add_module(_cuda_emu_testing MODULE tests/bindings/cuda_testing.cpp ${wrapper})
  target_compile_definitions(_cuda_emu_testing PRIVATE DLKERN_MODULE_NAME=_cuda_emu_testing)
  target_link_libraries(_cuda_emu_testing PRIVATE dlkern_emu dlkern_common)
  target_compile_options(_cuda_emu_testing PRIVATE ${DLKERN_EMU_KERNEL_OPTIONS})
  list(APPEND DLKERN_MODULES _cuda_emu_testing)
endif()
