// Command idleclients measures the gateway's memory with many idle
// keep-alive clients: it opens N connections to a loopback URL, sends one
// authenticated request on each, keeps them all open and idle, and prints
// the gateway process's resident set size (VmRSS) before and after.
//
//	go run ./bench/idleclients -url http://127.0.0.1:18090/score -pid <gateway pid> \
//	    -auth "Bearer $BENCH_CLIENT_KEY" -n 1000
//
// Loopback only; it stops by itself after -hold.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	target := flag.String("url", "", "gateway URL on loopback (required)")
	pid := flag.Int("pid", 0, "gateway process id, for its VmRSS (required)")
	auth := flag.String("auth", "", "Authorization header value")
	n := flag.Int("n", 1000, "idle keep-alive connections to hold")
	hold := flag.Duration("hold", 5*time.Second, "how long to hold them before measuring")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || *pid == 0 || u.Host == "" {
		log.Fatal("usage: idleclients -url http://127.0.0.1:PORT/path -pid PID [-auth V] [-n N]")
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		log.Fatal("loopback targets only")
	}
	before := rss(*pid)
	conns := make([]net.Conn, 0, *n)
	body := `{"data":[[0.1,0.2]]}`
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", u.RequestURI(), u.Host, len(body))
	if *auth != "" {
		req += "Authorization: " + *auth + "\r\n"
	}
	req += "\r\n" + body
	ok := 0
	for i := 0; i < *n; i++ {
		c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			log.Fatalf("connection %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			ok++
		}
		_ = c.SetDeadline(time.Time{})
		conns = append(conns, c)
	}
	time.Sleep(*hold)
	after := rss(*pid)
	fmt.Printf("idle keep-alive connections: %d (requests answered 200: %d)\n", len(conns), ok)
	fmt.Printf("gateway VmRSS: before %d KiB, with connections held %d KiB (%.1f MiB)\n", before, after, float64(after)/1024)
	for _, c := range conns {
		c.Close()
	}
}

func rss(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		log.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
			return kb
		}
	}
	return 0
}
