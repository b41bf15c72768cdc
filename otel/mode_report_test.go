package cgotel_test

import "maps"

// expect returns the span name and attributes of a run of job: with the
// core's report the span names the job and carries fromReport too.
func expect(job string, base, fromReport map[string]string) (string, map[string]string) {
	want := maps.Clone(base)
	want["cronguard.job"] = job
	maps.Copy(want, fromReport)
	return "cronguard.run " + job, want
}
