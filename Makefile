run:
	go run ./examples/quickstart

test:
	bash scripts/test

# Side-by-side benchmark against robfig/cron and gocron, and the scaling
# curve: about 4 minutes on 2 cores; writes bench/out/.
bench:
	cd bench && go run ./cmd/schedbench -out out

.PHONY: run test bench
