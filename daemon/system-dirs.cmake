# Where the system integration files go, as install() destinations relative to
# the install prefix, so that `cmake --install BUILD --prefix P` puts every
# file below P (and DESTDIR) and nothing anywhere else.
#
# mnd_system_dir(VAR MODULE PCVAR FALLBACK DOC): VAR is a cache variable that a
# packager may set (relative to the prefix, or absolute on purpose).  Unset, it
# is MODULE's pkg-config variable PCVAR, evaluated with ${prefix} set to
# CMAKE_INSTALL_PREFIX, when that lies below the prefix; otherwise FALLBACK.
#
# On Debian 12, udev.pc says /lib/udev and systemd.pc /lib/systemd/system:
# outside /usr, so the fallbacks lib/udev and lib/systemd/system apply.  With
# the merged /usr that Debian 12 requires, /usr/lib/udev is /lib/udev.
include_guard(GLOBAL)

function(mnd_system_dir var module pcvar fallback doc)
  set(${var} "" CACHE STRING "${doc} (relative to the install prefix; empty: from pkg-config ${module})")
  if(NOT "${${var}}" STREQUAL "")
    return()
  endif()
  set(value "")
  if(PKG_CONFIG_EXECUTABLE)
    execute_process(
      COMMAND ${PKG_CONFIG_EXECUTABLE} --variable=${pcvar} --define-variable=prefix=${CMAKE_INSTALL_PREFIX} ${module}
      OUTPUT_VARIABLE value OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc ERROR_QUIET)
    if(NOT rc EQUAL 0)
      set(value "")
    endif()
  endif()
  set(prefix "${CMAKE_INSTALL_PREFIX}")
  string(REGEX REPLACE "/+$" "" prefix "${prefix}")
  string(LENGTH "${prefix}/" plen)
  string(SUBSTRING "${value}/" 0 ${plen} head)
  if(NOT value STREQUAL "" AND head STREQUAL "${prefix}/")
    string(SUBSTRING "${value}" ${plen} -1 rel)
    set(why "pkg-config ${module} ${pcvar}=${value}")
  else()
    set(rel "${fallback}")
    if(value STREQUAL "")
      set(why "no pkg-config ${module} ${pcvar}")
    else()
      set(why "pkg-config ${module} ${pcvar}=${value} lies outside the prefix")
    endif()
  endif()
  message(STATUS "${doc}: <prefix>/${rel} (${why})")
  set(${var} "${rel}" PARENT_SCOPE)
endfunction()
