package deploytest

import (
	"fmt"

	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// CheckRestricted evaluates every pod template against the Pod Security
// Standards "restricted" level with the admission plugin's own checks, so a
// pass here means a namespace labelled enforce=restricted admits the pods.
func CheckRestricted(pods []PodTemplate) ([]error, error) {
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("pod security evaluator: %w", err)
	}
	lv := api.LevelVersion{Level: api.LevelRestricted, Version: api.LatestVersion()}
	var problems []error
	for _, p := range pods {
		meta, spec := p.Meta, p.Spec
		for _, r := range ev.EvaluatePod(lv, &meta, &spec) {
			if !r.Allowed {
				problems = append(problems, fmt.Errorf("%s: violates Pod Security restricted: %s: %s", p.Owner, r.ForbiddenReason, r.ForbiddenDetail))
			}
		}
	}
	return problems, nil
}
