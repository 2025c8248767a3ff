/*
 * libFuzzer harness for metrics_http_judge(): any bytes, up to the
 * endpoint's cap, as what a scraper sent. It asserts properties and aborts
 * on the first one broken:
 *  - the verdict is one of the known ones;
 *  - a final verdict (not NEED_MORE) for a prefix is the verdict of every
 *    longer input too, since the endpoint stops reading once it has one;
 *  - NEED_MORE is never the answer at the cap, and TOO_LARGE only there;
 *  - OK only for bytes that begin "GET /metrics".
 * tests/fuzz/replay_main.c runs this over the kept corpus in `make test`.
 */
#include "metrics_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr,                                        \
				"fuzz_metrics_http:%d: property broken: %s\n", \
				__LINE__, #cond);                              \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *request = (const char *)data;
	enum metrics_http_verdict first_final = METRICS_HTTP_NEED_MORE;

	if (size > METRICS_HTTP_REQUEST_MAX)
		size = METRICS_HTTP_REQUEST_MAX;
	for (size_t len = 0; len <= size; len++) {
		enum metrics_http_verdict verdict =
			metrics_http_judge(request, len);
		CHECK(verdict >= METRICS_HTTP_NEED_MORE &&
		      verdict <= METRICS_HTTP_TOO_LARGE);
		CHECK(first_final == METRICS_HTTP_NEED_MORE ||
		      verdict == first_final);
		if (first_final == METRICS_HTTP_NEED_MORE)
			first_final = verdict;
		CHECK((verdict == METRICS_HTTP_TOO_LARGE) ==
		      (len == METRICS_HTTP_REQUEST_MAX &&
		       first_final == METRICS_HTTP_TOO_LARGE));
		CHECK(verdict != METRICS_HTTP_OK ||
		      (len >= 12 && memcmp(request, "GET /metrics", 12) == 0));
	}
	return 0;
}
