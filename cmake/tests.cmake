# The test-only modules (DLKERN_TESTS): entry points that only tests/ calls,
# kept out of the production modules. Each mirrors the module it tests:
#   _cpu_testing        tests/bindings/cpu_testing.cpp on the CPU library
#   _cuda_testing       tests/bindings/cuda_testing.cpp on the CUDA library
#   _cuda_emu_testing   the same source, with the self-test kernels, on the emulator
# Included from CMakeLists.txt after the production modules and cmake/emu.cmake.

pybind11_add_module(_cpu_testing MODULE tests/bindings/cpu_testing.cpp)
target_link_libraries(_cpu_testing PRIVATE dlkern_cpu)
target_compile_options(_cpu_testing PRIVATE ${DLKERN_WARNINGS})
list(APPEND DLKERN_MODULES _cpu_testing)

if(DLKERN_HAVE_CUDA)
  pybind11_add_module(_cuda_testing MODULE tests/bindings/cuda_testing.cpp)
  target_compile_definitions(_cuda_testing PRIVATE DLKERN_MODULE_NAME=_cuda_testing)
  target_link_libraries(_cuda_testing PRIVATE dlkern_cuda CUDA::cudart_static)
  target_compile_options(_cuda_testing PRIVATE ${DLKERN_WARNINGS})
  list(APPEND DLKERN_MODULES _cuda_testing)
endif()

if(DLKERN_EMU)
  pybind11_add_module(_cuda_emu_testing MODULE tests/bindings/cuda_testing.cpp
                      ${DLKERN_EMU_SELFTEST_SOURCES})
  target_compile_definitions(_cuda_emu_testing PRIVATE DLKERN_MODULE_NAME=_cuda_emu_testing)
  target_link_libraries(_cuda_emu_testing PRIVATE dlkern_emu dlkern_common)
  target_compile_options(_cuda_emu_testing PRIVATE ${DLKERN_EMU_KERNEL_OPTIONS})
  list(APPEND DLKERN_MODULES _cuda_emu_testing)
endif()
