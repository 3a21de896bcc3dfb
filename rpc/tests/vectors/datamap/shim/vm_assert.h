/* ASSERT and friends as aborts, so that a broken invariant stops the generator. */
#ifndef SHIM_VM_ASSERT_H
#define SHIM_VM_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(cond)                                                          \
   do {                                                                       \
      if (!(cond)) {                                                          \
         fprintf(stderr, "%s:%d: assertion %s failed\n", __FILE__, __LINE__, #cond); \
         abort();                                                             \
      }                                                                       \
   } while (0)
#define NOT_REACHED() ASSERT(!"not reached")
#define Panic(...) (fprintf(stderr, __VA_ARGS__), abort())

#endif
