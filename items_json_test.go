package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

type jsonUser struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
}

func TestRunManuallyJSONItems(t *testing.T) {
	s, _ := newTest(t)
	var mu sync.Mutex
	var got []int64
	var fetches atomic.Int32
	err := s.Register("mail", "@hourly", Batch[jsonUser]{
		Fetch: func(context.Context, Page) ([]jsonUser, error) { fetches.Add(1); return nil, nil },
		Process: func(_ context.Context, u jsonUser) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, u.ID)
			return nil
		},
		Key: func(u jsonUser) string { return u.Email },
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Register("plain", "@hourly", JobFunc(func(context.Context) error { return nil }))
	ctx := context.Background()

	rep, err := s.RunManually(ctx, "mail", json.RawMessage(` [{"id":1,"email":"a@x"},{"id":2,"email":"b@x"}] `),
		json.RawMessage(`{"id":3,"email":"c@x"}`), jsonUser{ID: 4, Email: "d@x"})
	if err != nil || rep.Processed != 4 {
		t.Fatalf("JSON items: %v, %v; want 4 processed", rep, err)
	}
	if len(got) != 4 || got[0] != 1 || got[3] != 4 {
		t.Errorf("processed %v; want 1 2 3 4 in order", got)
	}

	long := strings.Repeat("z", 1000)
	for name, raw := range map[string]string{
		"wrong type":     `[{"id":"one","email":"a@x"}]`,
		"unknown field":  `{"id":1,"emial":"a@x"}`,
		"null":           `null`,
		"null in array":  `[{"id":1,"email":"a@x"}, null]`,
		"trailing data":  `{"id":1,"email":"a@x"} {"id":2}`,
		"not json":       `[{"id":1,` + long,
		"a number array": `[1, 2]`,
	} {
		_, err := s.RunManually(ctx, "mail", json.RawMessage(raw))
		if !errors.Is(err, ErrInvalidItems) || !strings.Contains(err.Error(), `job "mail"`) || !strings.Contains(err.Error(), "jsonUser") {
			t.Errorf("%s: err = %v; want ErrInvalidItems naming the job and the type", name, err)
		}
		if err != nil && len(err.Error()) > 600 {
			t.Errorf("%s: error is %d bytes; want the value cut", name, len(err.Error()))
		}
	}
	if len(got) != 4 {
		t.Errorf("a bad item list ran items: %v", got)
	}
	if _, err := s.RunManually(ctx, "plain", json.RawMessage(`[1]`)); !errors.Is(err, ErrInvalidItems) {
		t.Errorf("JSON items for a plain job: %v; want ErrInvalidItems", err)
	}
	rep, err = s.RunManually(ctx, "mail", json.RawMessage(`[]`))
	if err != nil || rep.Batches != 0 || rep.Processed != 0 || fetches.Load() != 0 {
		t.Errorf("an empty JSON array: %v, %v; want a run of no items, not a whole run", rep, err)
	}
}

// A Batch of raw JSON takes a json.RawMessage item as it is.
func TestRunManuallyRawJSONBatch(t *testing.T) {
	s, _ := newTest(t)
	var got []string
	_ = s.Register("raw", "@hourly", Batch[json.RawMessage]{
		Fetch:   func(context.Context, Page) ([]json.RawMessage, error) { return nil, nil },
		Process: func(_ context.Context, m json.RawMessage) error { got = append(got, string(m)); return nil },
		Key:     func(m json.RawMessage) string { return string(m) },
	})
	if _, err := s.RunManually(context.Background(), "raw", json.RawMessage(`[1,2]`)); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != `[1,2]` {
		t.Errorf("processed %q; want the one raw item", got)
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	in := Report{Job: "j", Trigger: TriggerManual, By: "alice", Instance: "i1", Processed: 3, Token: 42,
		Err: errors.New("smtp: 550 mailbox full")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"error":"smtp: 550 mailbox full"`) || !strings.Contains(string(b), `"by":"alice"`) ||
		!strings.Contains(string(b), `"token":42`) {
		t.Errorf("JSON %s: want the error text, by and the token", b)
	}
	var out Report
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Err == nil || out.Err.Error() != in.Err.Error() || out.By != "alice" || out.Processed != 3 || out.Token != 42 || out.Outcome() != "error" {
		t.Errorf("round trip: %+v; want %+v", out, in)
	}
	b, _ = json.Marshal(Report{Job: "ok"})
	if strings.Contains(string(b), "error") {
		t.Errorf("a report without error: %s; want no error field", b)
	}
	if err := json.Unmarshal([]byte(`{"processed":"x"}`), &out); err == nil {
		t.Error("a wrong type in JSON: want an error")
	}
}
