// Command worker is Loom's sample worker role: a background loop inside a
// guest that logs a line per tick (its logs reach the host over the
// channel) with the "job" setting from $LOOM_ENDPOINT/settings.
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	instance := os.Getenv("LOOM_INSTANCE")
	t := time.NewTicker(5 * time.Second)
	for n := 1; ; n++ {
		job := "idle"
		if resp, err := http.Get(os.Getenv("LOOM_ENDPOINT") + "/settings"); err == nil {
			var m map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				log.Printf("settings: %v", err)
			}
			_ = resp.Body.Close() // decoded: nothing left to lose
			if m["job"] != "" {
				job = m["job"]
			}
		}
		log.Printf("worker %s: tick %d (job %s)", instance, n, job)
		select {
		case <-stop:
			log.Printf("worker %s: stopping", instance)
			return
		case <-t.C:
		}
	}
}
