/* CType_IsPrint / CType_IsSpace: the C locale's classes, safe for negative chars. */
#ifndef SHIM_VM_CTYPE_H
#define SHIM_VM_CTYPE_H
#include <ctype.h>

static inline int CType_IsPrint(int c) { return c >= 0 && c < 128 && isprint(c); }
static inline int CType_IsSpace(int c) { return c >= 0 && c < 128 && isspace(c); }
#endif
