package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxResponse bounds what is read of one response.
const maxResponse = 64 << 20

// client calls the admin API.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newClient(base *url.URL, token string, timeout time.Duration) *client {
	return &client{base: base, token: token, http: &http.Client{Timeout: timeout}}
}

// apiError is an error answer of the API, or a failure to reach it.
type apiError struct {
	Status int    `json:"-"`
	Msg    string `json:"error"`
	Code   string `json:"code"`
}

func (e *apiError) Error() string {
	if e.Status == 0 {
		return e.Msg
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg)
}

// call sends a request to path (escaped segments already) and returns the
// body of a 200 answer, or an *apiError.
func (c *client) call(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &apiError{Msg: fmt.Sprintf("cannot reach %s: %v", c.base.Redacted(), unwrapURLError(err)), Code: "unreachable"}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, &apiError{Msg: fmt.Sprintf("read answer of %s %s: %v", method, u.Path, err), Code: "unreachable"}
	}
	if resp.StatusCode == http.StatusOK {
		return b, nil
	}
	e := &apiError{Status: resp.StatusCode}
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		e.Code, e.Msg = "http", strings.TrimSpace(clip(string(b)))
	}
	return nil, e
}

// get decodes the answer into v and returns it raw too.
func (c *client) get(ctx context.Context, path string, query url.Values, v any) ([]byte, error) {
	b, err := c.call(ctx, http.MethodGet, path, query, nil)
	if err == nil {
		err = decodeAnswer(b, v)
	}
	return b, err
}

func (c *client) post(ctx context.Context, path string, body []byte, v any) ([]byte, error) {
	b, err := c.call(ctx, http.MethodPost, path, nil, body)
	if err == nil {
		err = decodeAnswer(b, v)
	}
	return b, err
}

func decodeAnswer(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return &apiError{Msg: fmt.Sprintf("the API answered something else than expected: %v", err), Code: "bad_answer"}
	}
	return nil
}

// unwrapURLError drops the "Get URL:" prefix net/http adds.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func clip(s string) string {
	if len(s) <= 300 {
		return s
	}
	return strings.ToValidUTF8(s[:300], "") + "…"
}

// jobPath is the API path of a job, its name escaped as one segment.
func jobPath(name string, rest ...string) string {
	return "/api/jobs/" + strings.Join(append([]string{url.PathEscape(name)}, rest...), "/")
}
