run:
	go run ./examples/quickstart

test:
	bash scripts/test

.PHONY: run test
