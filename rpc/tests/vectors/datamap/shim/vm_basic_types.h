/*
 * The few basic types and macros that open-vm-tools' dataMap.c and hashMap.c use, for
 * compiling them outside their build on an LP64 Linux host. Written for this generator.
 */
#ifndef SHIM_VM_BASIC_TYPES_H
#define SHIM_VM_BASIC_TYPES_H

#include <stddef.h>
#include <stdint.h>

typedef int8_t int8;
typedef uint8_t uint8;
typedef int16_t int16;
typedef uint16_t uint16;
typedef int32_t int32;
typedef uint32_t uint32;
typedef int64_t int64;
typedef uint64_t uint64;
typedef char Bool;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

#define MAX_UINT32 UINT32_MAX
/* printf length modifier for int64 on LP64. */
#define FMT64 "l"
/* hashMap.c declares one function INLINE and defines it later: keep it an ordinary function. */
#define INLINE
#define ROUNDUP(x, y) (((x) + (y) - 1) / (y) * (y))

#endif
