package main

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test here that starts serve stops it; no goroutine may outlive the
// tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
