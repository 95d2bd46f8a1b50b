/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The SHA-256 of a file, for the configuration hash of the audit trail (built into mnd-audit,
 * which links libsodium). */
#pragma once

#include "audit-log.h"

/* SHA-256 of a file's contents in hex (MND_AUDIT_HASH_HEX_SIZE bytes).  -errno of open/read;
 * -EFBIG above 16 MiB (a configuration file is small); -EIO if libsodium cannot start. */
int mnd_file_sha256_hex(const char *path, char ret[MND_AUDIT_HASH_HEX_SIZE]);
