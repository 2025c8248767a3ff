/*
 * tests/unit/verdict.h: how every C unit test reports a case, one line each
 * ("ok NAME", or "FAIL NAME: why"), and counts the failures its main()
 * returns; the bats files that run the programs read those lines.
 *
 * Included by one test program's own .c file only: the definitions are
 * static, so each program has its own count.
 */
#ifndef UNIT_VERDICT_H
#define UNIT_VERDICT_H

#include <stdarg.h>
#include <stdio.h>

static int failures;

__attribute__((unused)) static void pass(const char *name)
{
	printf("ok %s\n", name);
}

__attribute__((unused, format(printf, 2, 3))) static void
fail(const char *name, const char *fmt, ...)
{
	va_list args;

	printf("FAIL %s: ", name);
	va_start(args, fmt);
	vprintf(fmt, args);
	va_end(args);
	printf("\n");
	failures++;
}

#endif
