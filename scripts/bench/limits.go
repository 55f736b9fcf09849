package main

import "flag"

// limitsToken is a phantom token on a route with a rate limit (high enough
// never to refuse) and an LLM token budget: the bench drives it beside the
// plain token, same API and path, to show what deciding limits costs.
var limitsToken = flag.String("limits-token", "", "a phantom token on a route like -route's but with rate_limit and token_budget; with it, the bench adds the phantom-limits target")

// limitsTargets is the phantom-limits target, when -limits-token is set.
func limitsTargets(proxy string) []target {
	if *limitsToken == "" {
		return nil
	}
	return []target{{"phantom-limits", proxy, "Bearer " + *limitsToken, nil}}
}
