/* What hashMap.h expects from vmware.h. */
#ifndef SHIM_VMWARE_H
#define SHIM_VMWARE_H
#include "vm_basic_types.h"
#include "vm_assert.h"
#endif
