package webhook

import (
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var logLevels = map[string]zapcore.Level{"debug": zapcore.DebugLevel, "info": zapcore.InfoLevel, "error": zapcore.ErrorLevel}

// NewLogger returns a JSON logger, through zap and zapr, writing to w. Level
// debug also shows logr's V(1) messages.
func NewLogger(level string, w io.Writer) (logr.Logger, error) {
	lvl, ok := logLevels[level]
	if !ok {
		return logr.Discard(), fmt.Errorf("logLevel %q: must be debug, info or error", level)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	// No sampling: every denial is worth its line.
	return zapr.NewLogger(zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel))), nil
}
