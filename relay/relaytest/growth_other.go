//go:build !linux

package relaytest

import "time"

// threadTime is wall time where no thread clock is at hand.
func threadTime() time.Duration { return time.Duration(time.Now().UnixNano()) }
