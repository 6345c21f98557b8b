# Install rules for the library (component "dev"): the public headers, the static library, the
# CMake package (find_package(netserver 0.2) -> netserver::netserver) and netserver.pc.
# Only include/netserver/ is installed: nothing under src/ is public.
include(CMakePackageConfigHelpers)

set(NETSERVER_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/netserver)

install(DIRECTORY include/netserver DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
install(TARGETS netserver EXPORT netserver-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(EXPORT netserver-targets NAMESPACE netserver:: DESTINATION ${NETSERVER_CMAKE_DIR}
        FILE netserver-targets.cmake COMPONENT dev)

# The config file finds every dependency again (recorded by netserver_dependency()).
get_property(config_lines GLOBAL PROPERTY NETSERVER_CONFIG_LINES)
list(JOIN config_lines "\n" NETSERVER_FIND_DEPENDENCIES)
configure_package_config_file(cmake/netserver-config.cmake.in
  ${PROJECT_BINARY_DIR}/netserver-config.cmake INSTALL_DESTINATION ${NETSERVER_CMAKE_DIR})
# At 0.x a minor version may change the API: 0.2.x satisfies find_package(netserver 0.2) only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/netserver-config-version.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/netserver-config.cmake ${PROJECT_BINARY_DIR}/netserver-config-version.cmake
        DESTINATION ${NETSERVER_CMAKE_DIR} COMPONENT dev)

# netserver.pc: a static library, so `pkg-config --static --libs netserver` lists the private
# dependencies too (Requires.private).
get_property(pc_requires GLOBAL PROPERTY NETSERVER_PC_REQUIRES)
get_property(pc_requires_private GLOBAL PROPERTY NETSERVER_PC_REQUIRES_PRIVATE)
list(JOIN pc_requires " " NETSERVER_PC_REQUIRES)
list(JOIN pc_requires_private " " NETSERVER_PC_REQUIRES_PRIVATE)
get_target_property(pc_definitions netserver INTERFACE_COMPILE_DEFINITIONS)
list(TRANSFORM pc_definitions PREPEND "-D")
list(JOIN pc_definitions " " NETSERVER_PC_CFLAGS)
set(NETSERVER_PC_PREFIX "@prefix@")   # kept for the install-time pass below
configure_file(cmake/netserver.pc.in ${PROJECT_BINARY_DIR}/netserver.pc.in @ONLY)
# The prefix is known only at install time (cmake --install --prefix, cpack): write the file then,
# straight into the destination (two installs at once must not share a file in the build tree).
install(CODE "
  set(prefix \"\${CMAKE_INSTALL_PREFIX}\")
  set(pc_file \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/netserver.pc\")
  message(STATUS \"Installing: \${pc_file}\")
  configure_file(\"${PROJECT_BINARY_DIR}/netserver.pc.in\" \"\${pc_file}\" @ONLY)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${pc_file}\")
" COMPONENT dev)
