# Finds ONNX Runtime's C API headers and sets ORT_INCLUDE_DIR (the folder holding onnxruntime_c_api.h).
#
# In order:
#   1. ONNXRUNTIME_ROOT (CMake or environment variable): an ORT release or install prefix.
#   2. A system install: onnxruntime's CMake package, pkg-config's libonnxruntime, or the usual prefixes.
#   3. Debian's libonnxruntime-dev package (the official headers, ORT 1.21, API 21), downloaded with its
#      checksum checked and unpacked under third_party/ (never committed). Headers do not depend on the
#      CPU architecture, so the amd64 package serves every platform.
#   4. apt-get download of the same package from Debian trixie, for when the pinned file has left the mirror.

set(_ort_hint_paths "")
if(DEFINED ONNXRUNTIME_ROOT)
  list(APPEND _ort_hint_paths "${ONNXRUNTIME_ROOT}")
elseif(DEFINED ENV{ONNXRUNTIME_ROOT})
  list(APPEND _ort_hint_paths "$ENV{ONNXRUNTIME_ROOT}")
endif()

find_package(onnxruntime CONFIG QUIET)
if(onnxruntime_FOUND AND TARGET onnxruntime::onnxruntime)
  get_target_property(_ort_pkg_inc onnxruntime::onnxruntime INTERFACE_INCLUDE_DIRECTORIES)
  list(APPEND _ort_hint_paths ${_ort_pkg_inc})
endif()
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(_ORT_PC QUIET libonnxruntime)
  list(APPEND _ort_hint_paths ${_ORT_PC_INCLUDE_DIRS})
endif()

set(_ort_third_party "${PROJECT_SOURCE_DIR}/third_party/onnxruntime-headers")
find_path(ORT_INCLUDE_DIR onnxruntime_c_api.h
  HINTS ${_ort_hint_paths}
  PATHS "${_ort_third_party}/usr/include"
  PATH_SUFFIXES include include/onnxruntime onnxruntime include/onnxruntime/core/session
)

if(NOT ORT_INCLUDE_DIR)
  set(_deb_name "libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb")
  set(_deb_url "https://deb.debian.org/debian/pool/main/o/onnxruntime/${_deb_name}")
  set(_deb_sha256 "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08")
  set(_deb "${_ort_third_party}/${_deb_name}")
  file(MAKE_DIRECTORY "${_ort_third_party}")
  message(STATUS "ONNX Runtime headers not found; fetching Debian's ${_deb_name}")
  file(DOWNLOAD "${_deb_url}" "${_deb}" EXPECTED_HASH SHA256=${_deb_sha256} STATUS _dl_status)
  list(GET _dl_status 0 _dl_code)
  if(NOT _dl_code EQUAL 0)
    file(REMOVE "${_deb}")
    find_program(_apt_get apt-get)
    if(_apt_get)
      message(STATUS "Pinned download failed (${_dl_status}); trying apt-get download from Debian trixie")
      set(_apt "${_ort_third_party}/apt")
      file(MAKE_DIRECTORY "${_apt}/lists/partial" "${_apt}/cache/archives/partial")
      file(WRITE "${_apt}/sources.list" "deb http://deb.debian.org/debian trixie main\n")
      set(_apt_opts -o Dir::State::Lists=${_apt}/lists -o Dir::Etc::SourceList=${_apt}/sources.list
                    -o Dir::Etc::SourceParts=/dev/null -o Dir::Cache=${_apt}/cache -o APT::Architecture=amd64)
      execute_process(COMMAND ${_apt_get} ${_apt_opts} update OUTPUT_QUIET ERROR_QUIET)
      execute_process(COMMAND ${_apt_get} ${_apt_opts} download libonnxruntime-dev
                      WORKING_DIRECTORY "${_ort_third_party}" OUTPUT_QUIET ERROR_QUIET)
      file(GLOB _deb "${_ort_third_party}/libonnxruntime-dev_*.deb")
    endif()
  endif()
  if(_deb AND EXISTS "${_deb}")
    # A .deb is an ar archive holding data.tar.xz; CMake's libarchive reads both.
    file(ARCHIVE_EXTRACT INPUT "${_deb}" DESTINATION "${_ort_third_party}/deb")
    file(GLOB _data_tar "${_ort_third_party}/deb/data.tar.*")
    file(ARCHIVE_EXTRACT INPUT "${_data_tar}" DESTINATION "${_ort_third_party}" PATTERNS usr/include)
  endif()
  find_path(ORT_INCLUDE_DIR onnxruntime_c_api.h
    PATHS "${_ort_third_party}/usr/include" PATH_SUFFIXES onnxruntime NO_DEFAULT_PATH)
endif()

if(NOT ORT_INCLUDE_DIR)
  message(FATAL_ERROR
    "ONNX Runtime C API headers (onnxruntime_c_api.h) not found and could not be downloaded.\n"
    "Provide them in one of these ways and build again:\n"
    "  * unpack an ONNX Runtime release (https://github.com/microsoft/onnxruntime/releases) and set\n"
    "    ONNXRUNTIME_ROOT=/path/to/onnxruntime-<os>-<arch>-<version> (the folder holding include/);\n"
    "  * install a system package: Debian/Ubuntu `apt install libonnxruntime-dev`, Homebrew `brew install onnxruntime`.")
endif()

file(STRINGS "${ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _ort_api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+" ORT_HEADERS_API_VERSION "${_ort_api_line}")
message(STATUS "ONNX Runtime headers: ${ORT_INCLUDE_DIR} (API ${ORT_HEADERS_API_VERSION})")
