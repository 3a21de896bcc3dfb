/* Str_Strcpy: a bounded copy that stops the program rather than truncate. */
#ifndef SHIM_STR_H
#define SHIM_STR_H
#include <string.h>
#include "vm_assert.h"

static inline char *
Str_Strcpy(char *dst, const char *src, size_t max)
{
   size_t n = strlen(src);

   ASSERT(n < max);
   memcpy(dst, src, n + 1);
   return dst;
}
#endif
