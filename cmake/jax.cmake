# dlkern.jax's XLA FFI handlers (csrc/bindings/jax) need XLA's FFI headers,
# which jaxlib ships. pyproject.toml lists jaxlib as a build requirement, so
# wheels always have the handlers; DLKERN_JAX=OFF leaves them out.
set(DLKERN_HAVE_JAX OFF)
if(NOT DLKERN_JAX STREQUAL "OFF")
  execute_process(
    COMMAND ${Python_EXECUTABLE} -c
            "import jaxlib, os; print(os.path.join(os.path.dirname(jaxlib.__file__), 'include'))"
    OUTPUT_VARIABLE DLKERN_XLA_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE DLKERN_XLA_FOUND ERROR_QUIET)
  if(DLKERN_XLA_FOUND EQUAL 0 AND EXISTS "${DLKERN_XLA_INCLUDE}/xla/ffi/api/ffi.h")
    set(DLKERN_HAVE_JAX ON)
    message(STATUS "dlkern: XLA FFI handlers for dlkern.jax (headers in ${DLKERN_XLA_INCLUDE})")
  elseif(DLKERN_JAX STREQUAL "ON")
    message(FATAL_ERROR "DLKERN_JAX=ON but jaxlib's XLA FFI headers were not found: "
                        "pip install jaxlib, or build with DLKERN_JAX=OFF or AUTO")
  else()
    message(STATUS "dlkern: jaxlib not found, building without dlkern.jax's handlers")
  endif()
endif()

# The handlers go into the kernels' modules (the test-only ones need none).
function(dlkern_jax_handlers module)
  if(DLKERN_HAVE_JAX AND module MATCHES "^_(cpu|cuda|cuda_emu)$")
    target_include_directories(${module} SYSTEM PRIVATE ${DLKERN_XLA_INCLUDE})
    target_compile_definitions(${module} PRIVATE DLKERN_HAVE_JAX)
  endif()
endfunction()
