/* reload: new rules while traffic flows (SIGHUP).
 *
 * The rule files are read and compiled on a thread of their own, off the
 * packet path; the receiving thread polls between two bursts and, once the
 * new set is built, swaps it in (workers_set_rules: the other workers are
 * held at their next burst boundary for the swap; a reload is rare, the
 * hold is the time to make N scratch spaces). A reload with any rule error
 * is refused and the running rules stay. When the track rules are the
 * same, their storm windows carry over.
 */
#ifndef BW_RELOAD_H
#define BW_RELOAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct verdict_set;
struct workers;

#define RELOAD_MAX_DIRS 16

struct reload {
	const char *const *dirs;     /* the rule directories (borrowed) */
	int ndirs;
	FILE *log;                   /* where reloads are reported (stderr) */
	pthread_t thread;
	bool running;
	int done;                    /* set by the thread (atomic) */
	struct verdict_set *result;
	char err[512];
	/* what happened, for tests and the summary */
	unsigned swapped, refused;
};

/* Loads the rules of dirs, or the default rule directory when ndirs is 0.
 * Returns the rule set (the caller owns it), or NULL: with err set on a
 * rule error (each error printed on stderr with file:line), with err empty
 * when no default rules exist (said on stderr). */
struct verdict_set *reload_load_rules(const char *const *dirs, int ndirs, char *err, size_t errlen);

/* Sets r up for the rules of dirs (borrowed, must outlive r); reports go
 * to log. Cannot fail. */
void reload_init(struct reload *r, const char *const *dirs, int ndirs, FILE *log);

/* Between two bursts, on the receiving thread: starts a reload when asked
 * and none is running, and swaps in one that has finished. Returns true
 * when the rules in force changed. */
bool reload_poll(struct reload *r, struct workers *ws, bool asked);

/* Waits for a reload in flight and throws its result away (the end of a
 * run): its thread and memory end cleanly. */
void reload_cancel(struct reload *r);

#endif
