# Manual pages of mnd: mnd(8), mnd.conf(5), generated with scdoc as mnctl(1) is
# (cli/CMakeLists.txt), and installed below CMAKE_INSTALL_MANDIR.
find_program(SCDOC scdoc REQUIRED)

set(MND_MAN_PAGES)
foreach(page mnd.8 mnd.conf.5)
  string(REGEX MATCH "[0-9]$" section ${page})
  add_custom_command(OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/${page}
    COMMAND ${SCDOC} < ${CMAKE_CURRENT_SOURCE_DIR}/${page}.scd > ${CMAKE_CURRENT_BINARY_DIR}/${page}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${page}.scd
    COMMENT "Generating ${page} with scdoc" VERBATIM)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  list(APPEND MND_MAN_PAGES ${CMAKE_CURRENT_BINARY_DIR}/${page})
endforeach()
add_custom_target(mnd-man ALL DEPENDS ${MND_MAN_PAGES})
