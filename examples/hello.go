// Says hello from Go, then echoes its input if there is any.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	input, _ := io.ReadAll(os.Stdin)
	fmt.Println("Hello from Go!")
	if len(input) > 0 {
		fmt.Println(string(input))
	}
}
