/* The integer group (exec_alu.c): what other files may hook into. */
#ifndef FERRY_SOFT_EXEC_ALU_H
#define FERRY_SOFT_EXEC_ALU_H

#include "engine/soft/soft.h"

/* MOV to and from control and debug registers shares the MOV mnemonic with the integer moves,
 * so exec_alu.c owns its registration and asks exec_system.c for those forms. */
insn_fn soft_select_mov_crdr(const struct insn *in);

#endif
