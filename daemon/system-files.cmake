# System integration files of mnd (unit, D-Bus policy, polkit, sysusers): install rules.
#
# Every destination is relative to the install prefix, so that
# `cmake --install BUILD --prefix /usr` (with or without DESTDIR) puts each file
# where Debian looks for it and nothing outside the prefix.  The D-Bus and
# polkit files are read only from /usr/share (and /etc): they take effect with
# prefix /usr.
include(${PROJECT_SOURCE_DIR}/daemon/system-dirs.cmake)

mnd_system_dir(MND_SYSTEMDSYSTEMUNITDIR systemd systemdsystemunitdir lib/systemd/system "systemd system unit directory")
mnd_system_dir(MND_SYSUSERSDIR systemd sysusersdir lib/sysusers.d "sysusers.d directory")
set(MND_DBUS_SYSTEM_POLICYDIR ${CMAKE_INSTALL_DATADIR}/dbus-1/system.d)
set(MND_DBUS_SYSTEM_SERVICEDIR ${CMAKE_INSTALL_DATADIR}/dbus-1/system-services)
set(MND_POLKIT_ACTIONDIR ${CMAKE_INSTALL_DATADIR}/polkit-1/actions)
set(MND_EXAMPLESDIR ${CMAKE_INSTALL_DOCDIR}/examples)

if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  message(STATUS "Install prefix ${CMAKE_INSTALL_PREFIX}: the system bus and polkit read their files from "
                 "/usr/share only, so mnd works as a system service when installed with prefix /usr")
endif()

# The unit and the activation file name the installed daemon, so they are
# configured when installing, with the prefix of that install (`cmake --install
# --prefix P` may differ from the configured CMAKE_INSTALL_PREFIX).
function(mnd_install_configured src destination)
  get_filename_component(name ${src} NAME_WLE)
  set(staged ${CMAKE_CURRENT_BINARY_DIR}/install-time/${name})
  if(IS_ABSOLUTE "${CMAKE_INSTALL_SBINDIR}")
    set(sbindir "${CMAKE_INSTALL_SBINDIR}")
  else()
    set(sbindir "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}")
  endif()
  if(IS_ABSOLUTE "${destination}")
    set(dest "${destination}")
  else()
    set(dest "\${CMAKE_INSTALL_PREFIX}/${destination}")
  endif()
  install(CODE "
    set(MND_SBINDIR \"${sbindir}\")
    configure_file(\"${src}\" \"${staged}\" @ONLY)
    file(INSTALL DESTINATION \"${dest}\" TYPE FILE FILES \"${staged}\")")
endfunction()

mnd_install_configured(${CMAKE_CURRENT_SOURCE_DIR}/mnd.service.in ${MND_SYSTEMDSYSTEMUNITDIR})
mnd_install_configured(${CMAKE_CURRENT_SOURCE_DIR}/org.microneedle.Mnd1.service.in ${MND_DBUS_SYSTEM_SERVICEDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/mnd.sysusers DESTINATION ${MND_SYSUSERSDIR} RENAME mnd.conf)
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/org.microneedle.Mnd1.conf DESTINATION ${MND_DBUS_SYSTEM_POLICYDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/org.microneedle.mnd.policy DESTINATION ${MND_POLKIT_ACTIONDIR})
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/50-mnd-operators.rules.example DESTINATION ${MND_EXAMPLESDIR}
        RENAME 50-mnd-operators.rules)
