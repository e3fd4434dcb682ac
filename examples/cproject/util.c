#include "util.h"
#include "config.h"

int scaled(int x) { return x * SCALE; }
