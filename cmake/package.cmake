# The C++ package: headers, static libraries and a CMake package config, so
# that a C++ program does find_package(dlkern) and links dlkern::dlkern_cpu
# (and dlkern::dlkern_cuda). Installed by
#   cmake -S . -B build -DDLKERN_PYTHON=OFF && cmake --install build --prefix <p>
# into <p>/include, <p>/lib and <p>/lib/cmake/dlkern, and by the wheel inside
# the Python package, as dlkern/include, dlkern/lib and dlkern/share/cmake/dlkern
# (python -m dlkern cmake-dir prints the last). Every path in the config is
# relative to where it lies, so an installed tree may be moved.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(SKBUILD)
  set(DLKERN_INSTALL_INCLUDEDIR dlkern/include)
  set(DLKERN_INSTALL_LIBDIR dlkern/lib)
  set(DLKERN_INSTALL_CMAKEDIR dlkern/share/cmake/dlkern)
else()
  set(DLKERN_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR})
  set(DLKERN_INSTALL_LIBDIR ${CMAKE_INSTALL_LIBDIR})
  set(DLKERN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/dlkern)
endif()

foreach(t dlkern_common dlkern_cpu dlkern_cuda)
  if(TARGET ${t})
    target_include_directories(${t} PUBLIC $<INSTALL_INTERFACE:${DLKERN_INSTALL_INCLUDEDIR}>)
    # The installed names for a program that add_subdirectory()s this tree.
    add_library(dlkern::${t} ALIAS ${t})
  endif()
endforeach()
# Two export sets: the CUDA library's needs the CUDA toolkit, which the config
# looks for only when that library was built, and a program using the CPU
# library alone does without.
install(TARGETS dlkern_common dlkern_cpu EXPORT dlkernTargets
        ARCHIVE DESTINATION ${DLKERN_INSTALL_LIBDIR})
install(EXPORT dlkernTargets NAMESPACE dlkern:: DESTINATION ${DLKERN_INSTALL_CMAKEDIR})
if(DLKERN_HAVE_CUDA)
  install(TARGETS dlkern_cuda EXPORT dlkernCudaTargets
          ARCHIVE DESTINATION ${DLKERN_INSTALL_LIBDIR})
  install(EXPORT dlkernCudaTargets NAMESPACE dlkern:: DESTINATION ${DLKERN_INSTALL_CMAKEDIR})
endif()
install(DIRECTORY csrc/include/dlkern DESTINATION ${DLKERN_INSTALL_INCLUDEDIR})

configure_package_config_file(cmake/dlkernConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfig.cmake
  INSTALL_DESTINATION ${DLKERN_INSTALL_CMAKEDIR})
# The version is the Python package's (python/dlkern/_version.py).
file(STRINGS ${CMAKE_CURRENT_SOURCE_DIR}/python/dlkern/_version.py DLKERN_VERSION_LINE
     REGEX "^__version__")
string(REGEX MATCH "[0-9]+(\\.[0-9]+)*" DLKERN_VERSION "${DLKERN_VERSION_LINE}")
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/dlkernConfigVersion.cmake
  VERSION ${DLKERN_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/dlkernConfigVersion.cmake
        DESTINATION ${DLKERN_INSTALL_CMAKEDIR})
