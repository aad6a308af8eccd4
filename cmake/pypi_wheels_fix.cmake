# Included with -DCMAKE_PROJECT_INCLUDE=... only when building against the ROS 2 PyPI wheels
# (see scripts/setup.sh); a real ROS 2 install never needs it.
#
# 1. Fourteen wheels export *__rosidl_generator_py targets whose include directories name the
#    Python of the machine that built them (/opt/python/cp311-cp311/...). CMake refuses imported
#    targets with non-existent include paths, so those are replaced by this machine's Python
#    and NumPy include directories.
# 2. When the virtual environment lies inside the package source (.venv at the repo root), our
#    own generated Python target exports NumPy's include directory from the source tree, which
#    install(EXPORT) rejects; such paths are made build-interface only.
find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)

function(_showroom_fix_wheel_include_dirs)
  get_property(imported DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS imported)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(fixed "")
    set(changed FALSE)
    foreach(dir IN LISTS dirs)
      if(dir MATCHES "^/opt/python/")
        set(changed TRUE)
      else()
        list(APPEND fixed "${dir}")
      endif()
    endforeach()
    if(changed)
      list(APPEND fixed ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES fixed)
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${fixed}")
    endif()
  endforeach()

  get_property(own DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS own)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(fixed "")
    foreach(dir IN LISTS dirs)
      string(FIND "${dir}" "${CMAKE_SOURCE_DIR}/" at)
      if(at EQUAL 0 AND NOT dir MATCHES "^\\$<")
        list(APPEND fixed "$<BUILD_INTERFACE:${dir}>")
      else()
        list(APPEND fixed "${dir}")
      endif()
    endforeach()
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${fixed}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _showroom_fix_wheel_include_dirs)
