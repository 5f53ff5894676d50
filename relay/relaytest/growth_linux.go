package relaytest

import (
	"syscall"
	"time"
	"unsafe"
)

// threadTime is the CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
func threadTime() time.Duration {
	const clockThreadCPUTime = 3
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return time.Duration(time.Now().UnixNano())
	}
	return time.Duration(ts.Nano())
}
