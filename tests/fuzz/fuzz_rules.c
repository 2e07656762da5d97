/* libFuzzer harness for the rule-file parser: arbitrary bytes as a rule
 * file, then finish and validate. Regex compile is left out (Hyperscan's
 * compile is slow and not ours to fuzz); meta RPN and evaluation are in. */
#include <stdint.h>
#include <stdlib.h>

#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rule_set *s = rule_set_new();
	uint32_t *hits;

	if (!s)
		return 0;
	if (rules_load_text(s, "fuzz.cf", (const char *)data, size) == 0 && rules_finish(s) == 0) {
		if (rule_set_validate(s) != 0)
			abort();
		hits = calloc(s->nrules + 1, sizeof(*hits));
		if (hits) {
			for (uint32_t i = 0; i < s->nrules; i++)
				hits[i] = i & 1;
			for (uint32_t i = 0; i < s->nmeta_order; i++)
				if (s->rules[s->meta_order[i]].test == RULE_TEST_META)
					hits[s->meta_order[i]] = rules_meta_eval(s, s->meta_order[i], hits) != 0;
			free(hits);
		}
		(void)rules_action_for(s, 5.0);
	}
	rule_set_free(s);
	return 0;
}
