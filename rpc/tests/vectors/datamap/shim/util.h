/* Util_ConstTimeMemDiff: the number of differing bytes, in time independent of the data. */
#ifndef SHIM_UTIL_H
#define SHIM_UTIL_H
#include "vm_basic_types.h"

static inline size_t
Util_ConstTimeMemDiff(const void *a, const void *b, size_t n)
{
   const uint8 *x = a, *y = b;
   size_t diff = 0, i;

   for (i = 0; i < n; i++) {
      diff += x[i] != y[i];
   }
   return diff;
}
#endif
