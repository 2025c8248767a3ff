#!/usr/bin/python3
"""scrape.py: Prometheus text on stdin, through a real parser, to plain lines.

Parses the text with prometheus_client's parser (Debian's
python3-prometheus-client; run it with /usr/bin/python3, which sees Debian's
packages) and prints one line per sample, NAME{LABEL="VALUE",...} VALUE, with
the labels sorted and the value as a whole number, so a test can grep or
look up a counter. Exits 1, saying why on stderr, when the text does not
parse, when a family lacks HELP or a counter or gauge TYPE, or when a value
is not a whole number.
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as error:  # the parser raises ValueError and others
        sys.exit("scrape.py: the text does not parse: %s" % error)
    if not families:
        sys.exit("scrape.py: no metric families")
    for family in families:
        if family.type not in ("counter", "gauge"):
            sys.exit("scrape.py: %s: type %s" % (family.name, family.type))
        if not family.documentation:
            sys.exit("scrape.py: %s: no HELP" % family.name)
        for sample in family.samples:
            if sample.value != int(sample.value) or sample.value < 0:
                sys.exit("scrape.py: %s: value %r" % (sample.name, sample.value))
            labels = ",".join('%s="%s"' % item for item in sorted(sample.labels.items()))
            name = "%s{%s}" % (sample.name, labels) if labels else sample.name
            print("%s %d" % (name, int(sample.value)))


main()
