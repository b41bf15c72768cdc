package cronguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
)

// jsonItemsBatch is a Batch that can decode RunManually items given as JSON.
type jsonItemsBatch interface {
	decodeJSONItems(job string, raw json.RawMessage) ([]any, error)
}

// decodeJSONItems replaces every json.RawMessage among items by the T (or
// the Ts, for a JSON array) it decodes to, for a Batch[T] whose T is not
// json.RawMessage itself. This is how the admin API runs chosen items: it
// never knows T.
func decodeJSONItems(b batchJob, job string, items []any) ([]any, error) {
	jb, ok := b.(jsonItemsBatch)
	if !ok {
		return items, nil
	}
	out := make([]any, 0, len(items))
	for _, it := range items {
		raw, ok := it.(json.RawMessage)
		if !ok {
			out = append(out, it)
			continue
		}
		ts, err := jb.decodeJSONItems(job, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	return out, nil
}

// decodeJSONItems decodes raw, one item or an array of items, into Ts.
// Decoding is strict: an unknown field, a null item, a value of the wrong
// type or trailing data is ErrInvalidItems, naming the item and its value (cut
// to 200 bytes).
func (b Batch[T]) decodeJSONItems(job string, raw json.RawMessage) ([]any, error) {
	if reflect.TypeFor[T]() == reflect.TypeFor[json.RawMessage]() {
		return []any{raw}, nil // a Batch of raw JSON takes it as it is
	}
	elems := []json.RawMessage{raw}
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '[' {
		elems = nil
		if err := json.Unmarshal(t, &elems); err != nil {
			return nil, fmt.Errorf("%w: job %q: items %s: %v; want a JSON array of %s",
				ErrInvalidItems, job, clip(string(raw)), err, typeName[T]())
		}
	}
	out := make([]any, 0, len(elems))
	for i, el := range elems {
		v, err := decodeStrict[T](el)
		if err != nil {
			return nil, fmt.Errorf("%w: job %q: item %d %s: %v; want %s as JSON",
				ErrInvalidItems, job, i, clip(string(el)), err, typeName[T]())
		}
		out = append(out, v)
	}
	return out, nil
}

// decodeStrict decodes one JSON value into a T, refusing null, unknown
// fields and trailing data.
func decodeStrict[T any](el json.RawMessage) (T, error) {
	var v T
	if t := bytes.TrimSpace(el); bytes.Equal(t, []byte("null")) || len(t) == 0 {
		return v, errors.New("null or empty item")
	}
	dec := json.NewDecoder(bytes.NewReader(el))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, err
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		return v, errors.New("trailing data after the item")
	}
	return v, nil
}
