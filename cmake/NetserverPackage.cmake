# Debian packages (scripts/package, or `cpack -G DEB` in a build configured with
# CMAKE_INSTALL_PREFIX=/usr):
#   libnetserver-dev  headers, static library, CMake package, netserver.pc (component "dev");
#                     Depends on the -dev packages of every dependency (netserver_dependency()).
#   netserver-demos   echo_server, chat_server, /etc/netserver/*.yaml, systemd units ("demos");
#                     Depends computed from the binaries' shared libraries (dpkg-shlibdeps).
set(CPACK_PACKAGE_NAME netserver)
set(CPACK_PACKAGE_VENDOR "netserver")
set(CPACK_PACKAGE_CONTACT "netserver maintainers <netserver@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_README ${PROJECT_SOURCE_DIR}/README.md)
set(CPACK_COMPONENTS_ALL dev)
if(NETSERVER_EXAMPLES)
  list(APPEND CPACK_COMPONENTS_ALL demos)
endif()
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)

get_property(deb_depends GLOBAL PROPERTY NETSERVER_DEB_DEPENDS)
list(APPEND deb_depends pkg-config)   # netserver.pc and the CMake package's pkg-config lookups
list(JOIN deb_depends ", " deb_depends)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libnetserver-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "${deb_depends}")
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEV_DESCRIPTION "netserver: write TCP servers the way Perl's Net::Server does (development files)
 A C++20 toolkit: write the protocol once as a handler, pick the process model (single, prefork,
 multiplex) in YAML. Headers, static library, CMake package (find_package(netserver)) and
 pkg-config file.")

set(CPACK_DEBIAN_DEMOS_PACKAGE_NAME netserver-demos)
set(CPACK_DEBIAN_DEMOS_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_DEMOS_PACKAGE_SECTION net)
set(CPACK_COMPONENT_DEMOS_DESCRIPTION "netserver demos: echo and chat servers
 The echo and chat demos of netserver, with their configurations in /etc/netserver and systemd
 units (netserver-echo.service, netserver-chat.service, netserver-chat.socket).")
# The demos' configs are the administrator's to edit: dpkg keeps local changes on upgrade.
file(WRITE ${PROJECT_BINARY_DIR}/debian-demos/conffiles "/etc/netserver/chat.yaml\n/etc/netserver/echo.yaml\n")
set(CPACK_DEBIAN_DEMOS_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/debian-demos/conffiles)

include(CPack)
