# netserver_dependency(): find a library netserver links, and record it once for everything a
# consumer needs to find it again -- the installed CMake package's config file, netserver.pc and
# the Debian package's Depends. A static library needs its PRIVATE dependencies at the
# consumer's link too, so every dependency goes into all three.
#
#   netserver_dependency(FIND <find_package arguments...> DEB <debian -dev package> [PC <module>])
#   netserver_dependency(PKG_CONFIG <PREFIX> <module> DEB <debian -dev package>)
#
# FIND calls find_package(... REQUIRED) and writes find_dependency(...) into the config file.
# PKG_CONFIG calls pkg_check_modules(<PREFIX> IMPORTED_TARGET <module>) and gives the target
# PkgConfig::<PREFIX>; the config file creates the same target. PC names the pkg-config module
# of a FIND dependency (none: it has no .pc file, e.g. Boost's headers). PUBLIC puts the module
# in netserver.pc's Requires (its headers are included by netserver's headers), otherwise it goes
# into Requires.private (only needed to link).

function(netserver_dependency)
  cmake_parse_arguments(PARSE_ARGV 0 arg "PUBLIC" "DEB;PC" "FIND;PKG_CONFIG")
  if(arg_FIND)
    find_package(${arg_FIND} REQUIRED)
    list(JOIN arg_FIND " " find_arguments)
    set_property(GLOBAL APPEND PROPERTY NETSERVER_CONFIG_LINES "find_dependency(${find_arguments})")
    # What proves, in a consumer's CMakeCache.txt, that the config file found it (tests/
    # test_package.cpp): <package>_DIR for a config-mode package. A find module's targets are
    # namespaced (OpenSSL::SSL), so a missing find_dependency fails the consumer's generate step.
    list(GET arg_FIND 0 package)
    if(${package}_CONFIG)
      set_property(GLOBAL APPEND PROPERTY NETSERVER_FOUND_ENTRIES ${package}_DIR)
    endif()
  elseif(arg_PKG_CONFIG)
    list(GET arg_PKG_CONFIG 0 prefix)
    list(GET arg_PKG_CONFIG 1 module)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(${prefix} REQUIRED IMPORTED_TARGET GLOBAL ${module})
    set_property(GLOBAL APPEND PROPERTY NETSERVER_CONFIG_LINES
                 "netserver_pkg_config_dependency(${prefix} ${module})")
    set_property(GLOBAL APPEND PROPERTY NETSERVER_FOUND_ENTRIES ${prefix}_FOUND)
    set(arg_PC ${module})
  else()
    message(FATAL_ERROR "netserver_dependency: give FIND or PKG_CONFIG")
  endif()
  if(NOT arg_DEB)
    message(FATAL_ERROR "netserver_dependency: give the Debian -dev package (DEB) of ${arg_FIND}${arg_PKG_CONFIG}")
  endif()
  set_property(GLOBAL APPEND PROPERTY NETSERVER_DEB_DEPENDS ${arg_DEB})
  if(arg_PC AND arg_PUBLIC)
    set_property(GLOBAL APPEND PROPERTY NETSERVER_PC_REQUIRES ${arg_PC})
  elseif(arg_PC)
    set_property(GLOBAL APPEND PROPERTY NETSERVER_PC_REQUIRES_PRIVATE ${arg_PC})
  endif()
endfunction()
