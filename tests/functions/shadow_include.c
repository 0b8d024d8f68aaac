/* At compile time, tries to put /etc/shadow into the compiler's error message. */
#include "/etc/shadow"
int main(void) { return 0; }
