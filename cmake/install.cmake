# Installs libmxmoe, the public headers, the CLI, a CMake package (find_package(mxmoe), target
# mxmoe::mxmoe) and a pkg-config file (mxmoe.pc).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(mxmoe_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/mxmoe)

install(TARGETS mxmoe_lib EXPORT mxmoeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The eval runner stays with the CLI: its header is not part of the installed API.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/mxmoe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.hpp" PATTERN "eval.hpp" EXCLUDE)
install(FILES ${PROJECT_BINARY_DIR}/generated/mxmoe/version.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/mxmoe)
if(TARGET mxmoe_cli)
  install(TARGETS mxmoe_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

install(EXPORT mxmoeTargets NAMESPACE mxmoe:: DESTINATION ${mxmoe_cmake_dir})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/mxmoeConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/mxmoeConfig.cmake INSTALL_DESTINATION ${mxmoe_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/mxmoeConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/mxmoeConfig.cmake ${PROJECT_BINARY_DIR}/mxmoeConfigVersion.cmake
        DESTINATION ${mxmoe_cmake_dir})

# pkg-config: a static libmxmoe needs its dependencies on the link line (pkg-config --static).
set(mxmoe_pc_private_libs "")
if(MXMOE_WITH_HWY)
  string(APPEND mxmoe_pc_private_libs " -lhwy")
endif()
if(MXMOE_WITH_CUDA)
  string(APPEND mxmoe_pc_private_libs " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt")
endif()
string(APPEND mxmoe_pc_private_libs " -pthread")
# Relocatable: the prefix is found from the .pc file's own folder.
file(RELATIVE_PATH mxmoe_pc_prefix "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file(${CMAKE_CURRENT_LIST_DIR}/mxmoe.pc.in ${PROJECT_BINARY_DIR}/mxmoe.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/mxmoe.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
