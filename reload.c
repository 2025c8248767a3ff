/*
 * reload: re-read the allowed-subnets file on SIGHUP, all or nothing.
 *
 * The new file is parsed into a table of its own, so a file that cannot be
 * read, or fails on its last line, leaves the set in force exactly as it
 * was: a broken edit never opens or closes the door to anyone.
 * reload_allowed_subnets() only reads the file and says what happened;
 * reload_and_log() is the thin layer that logs it.
 */
#include "reload.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

int reload_allowed_subnets(const char *path, struct subnets *in_force,
			   struct metrics *metrics, subnets_warn_fn *warn,
			   void *warn_context, char *message, size_t size)
{
	struct subnets fresh;
	struct subnets_error error;

	memset(&fresh, 0, sizeof fresh);
	if (subnets_load(path, &fresh, &error, warn, warn_context) != 0) {
		metrics_count_reload(metrics, false);
		if (error.line == 0)
			snprintf(message, size,
				 "reload: %s: %s; keeping the %zu entries in "
				 "force",
				 path, error.reason, in_force->count);
		else
			snprintf(message, size,
				 "reload: %s:%zu: \"%s\": %s; keeping the %zu "
				 "entries in force",
				 path, error.line, error.text, error.reason,
				 in_force->count);
		return -1;
	}
	subnets_free(in_force);
	*in_force = fresh;
	metrics_count_reload(metrics, true);
	metrics_note_subnets_loaded(metrics, in_force->count, time(NULL));
	snprintf(message, size, "reload: %s: %zu entries in force", path,
		 in_force->count);
	return 0;
}

static void warn_masked_entry(void *context, size_t line, const char *text,
			      const char *reason)
{
	log_msg(LOG_WARNING, "reload: %s:%zu: \"%s\": %s",
		(const char *)context, line, text, reason);
}

int reload_and_log(const char *path, struct subnets *allowed,
		   struct metrics *metrics)
{
	char message[512];

	if (path == NULL || allowed == NULL) {
		log_msg(LOG_WARNING, "reload: no --allowed-subnets file to read");
		return -1;
	}
	int result = reload_allowed_subnets(path, allowed, metrics,
					    warn_masked_entry, (void *)path,
					    message, sizeof message);
	log_msg(result == 0 ? LOG_NOTICE : LOG_ERR, "%s", message);
	return result;
}
