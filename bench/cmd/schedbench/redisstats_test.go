package main

import "testing"

// TestCommandStatsSumsOnlySentCommands: a script's inner calls are in its
// own time, so the server's time per run adds only what the client sent.
func TestCommandStatsSumsOnlySentCommands(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_hget:calls=10,usec=3,usec_per_call=0.30,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=10,usec=26,usec_per_call=2.60,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_config|resetstat:calls=1,usec=32,usec_per_call=32.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_client|setinfo:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n"
	stats := parseCommandStats(info)
	if len(stats) != 3 || stats[0].Name != "evalsha" || stats[0].PerUs != 2.6 {
		t.Fatalf("parsed %+v, want evalsha first at 2.6 µs, config left out", stats)
	}
	var sent sentNames
	sent.add("evalsha")
	if got := markSent(stats, &sent); got != 26 {
		t.Fatalf("sent usec %d, want 26 (evalsha only, its hget not added again)", got)
	}
	sent.add("client")
	if got := markSent(stats, &sent); got != 30 {
		t.Fatalf("sent usec %d, want 30 (client|setinfo counted under client)", got)
	}
}
