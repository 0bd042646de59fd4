/*
 * fuzz.h - what the libFuzzer harnesses share (fuzz/NAME.c).
 *
 * Each harness is one program, fuzz/NAME.fuzz, built by
 * ./configure CC=clang --enable-fuzzing and run by fuzz/run for a fixed time
 * from the seeds in fuzz/corpus/NAME. A harness defines
 * LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize when it needs set-up);
 * libFuzzer's main drives it. Everything it allocates for one input it frees
 * before returning, so that a leak is a finding.
 */
#ifndef PGBUN_FUZZ_H
#define PGBUN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated malloc'd copy of the input (aborts on out of memory). */
char *fuzz_strndup(const uint8_t *data, size_t size);

/*
 * Writes the input to NAME in a directory of this process's own (made on
 * first use, removed at exit) and returns its path, valid until the next
 * call with the same name.
 */
const char *fuzz_file(const char *name, const uint8_t *data, size_t size);

/*
 * Silences pgbun's log: a harness's inputs make it say a lot, which is not a
 * finding. A harness without an LLVMFuzzerInitialize of its own gets one that
 * does only this.
 */
void fuzz_quiet(void);

/* For a loader that returned NULL: its refusal says why (else abort), and the message is freed. Returns 0. */
int fuzz_refused(char *err);

#endif
