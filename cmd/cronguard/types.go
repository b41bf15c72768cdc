package main

import "time"

// The CLI's own view of the admin API's JSON: it needs no code of the core.

type report struct {
	Job       string        `json:"job"`
	Trigger   string        `json:"trigger"`
	Tick      time.Time     `json:"tick"`
	By        string        `json:"by"`
	Instance  string        `json:"instance"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"duration"`
	Skipped   string        `json:"skipped"`
	Batches   int           `json:"batches"`
	Processed int           `json:"processed"`
	Failed    int           `json:"failed"`
	Stop      string        `json:"stop"`
	Tripped   bool          `json:"tripped"`
	Error     string        `json:"error"`
}

type flagState struct {
	Enabled bool      `json:"enabled"`
	Reason  string    `json:"reason"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

type job struct {
	Name         string     `json:"name"`
	Spec         string     `json:"spec"`
	Flag         string     `json:"flag"`
	Prev         time.Time  `json:"prev"`
	Next         time.Time  `json:"next"`
	Enabled      bool       `json:"enabled"`
	EnabledError string     `json:"enabled_error"`
	Switch       *flagState `json:"switch"`
	Running      int        `json:"running"`
	Instance     string     `json:"instance"`
	Last         *report    `json:"last"`
	HistoryError string     `json:"history_error"`
}

type jobList struct {
	Jobs []job `json:"jobs"`
}

type historyEntry struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	Trigger  string    `json:"trigger"`
	Tick     time.Time `json:"tick"`
	By       string    `json:"by"`
	Report   *report   `json:"report"`
	Skip     string    `json:"skip"`
	Missed   int       `json:"missed"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Enabled  *bool     `json:"enabled"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
}

type jobDetail struct {
	Job     job            `json:"job"`
	History []historyEntry `json:"history"`
}
