/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libmnp: everything in one include: #include <mnp/mnp.h> */
#pragma once

#include "frame.h"
#include "limits.h"
#include "link.h"
#include "message.h"
#include "pen-ids.h"
