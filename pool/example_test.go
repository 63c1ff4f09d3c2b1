package pool_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/modelgate/modelgate/pool"
)

// The proxy's loop over one request's tries. Here the preferred backend
// refuses connections, so the request is retried on the other backend of
// the same priority, and the standby of priority 2 is not needed.
func ExamplePool_Attempts() {
	p, err := pool.New(pool.Options{
		Backends: []pool.BackendOptions{
			{Name: "weu", URL: "http://10.0.0.4/score", Weight: ptr(3)},
			{Name: "weu2", URL: "http://10.0.0.5/score"},
			{Name: "neu", URL: "http://10.1.0.4/score", Priority: 2},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	send := func(i int) pool.Outcome { // stands in for the transport
		if p.Name(i) == "weu" {
			return pool.Failure(pool.ConnectError, errors.New("connection refused"))
		}
		return pool.Response(http.StatusOK, nil, time.Now())
	}

	a := p.Attempts()
	for {
		i, ok := a.Next()
		if !ok {
			fmt.Println("503 upstream_unavailable, retry at", p.SoonestAvailable())
			return
		}
		o := send(i)
		a.Record(i, o)
		fmt.Printf("try %d: %s -> %d %v\n", a.Tries(), p.Name(i), o.Status, o.Cond)
		if !a.Retry(true, false) {
			break
		}
	}
	// Output:
	// try 1: weu -> 0 connect_error
	// try 2: weu2 -> 200 none
}

func ptr[T any](v T) *T { return &v }
