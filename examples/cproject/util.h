#ifndef UTIL_H
#define UTIL_H
int scaled(int x);
void shout(char *s);
#endif
