// Go's runtime sleeps through poll_oneoff and reads the clocks: both must work.
package main

import (
	"fmt"
	"time"
)

func main() {
	start := time.Now()
	time.Sleep(30 * time.Millisecond)
	fmt.Printf("slept_ms %d\n", time.Since(start).Milliseconds())
}
