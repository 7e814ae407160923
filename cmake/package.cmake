# Install rules for embedding dlkern in a C++ program without Python:
#   cmake -S . -B build -DDLKERN_PYTHON=OFF && cmake --install build --prefix <p>
#   then find_package(dlkern) and link dlkern::dlkern_cpu (and dlkern::dlkern_cuda).
# Wheels carry only the Python modules, so these rules are skipped there.
if(SKBUILD)
  return()
endif()
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(DLKERN_INSTALL_TARGETS dlkern_common dlkern_cpu)
if(DLKERN_HAVE_CUDA)
  list(APPEND DLKERN_INSTALL_TARGETS dlkern_cuda)
endif()
foreach(t ${DLKERN_INSTALL_TARGETS})
  target_include_directories(${t} PUBLIC $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
endforeach()
install(TARGETS ${DLKERN_INSTALL_TARGETS} EXPORT dlkernTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY csrc/include/dlkern DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT dlkernTargets NAMESPACE dlkern::
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dlkern)
configure_package_config_file(cmake/dlkernConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dlkern)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/dlkernConfigVersion.cmake
  VERSION 0.1.0 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/dlkern)
