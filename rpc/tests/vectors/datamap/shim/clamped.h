/* Clamped_UMul32: a * b saturated at MAX_UINT32; FALSE when it saturated. */
#ifndef SHIM_CLAMPED_H
#define SHIM_CLAMPED_H
#include "vm_basic_types.h"

static inline Bool
Clamped_UMul32(uint32 *out, uint32 a, uint32 b)
{
   uint64 r = (uint64)a * b;

   if (r > MAX_UINT32) {
      *out = MAX_UINT32;
      return FALSE;
   }
   *out = (uint32)r;
   return TRUE;
}
#endif
